"""How accurate is each method? Comparisons of real runs and the analyses that read them.

``compare`` runs methods x seeds (``runner``, with the named ``variants``) and writes the
tables (``tables``) and plots (``plots``) through ``report``; ``plateau``, ``em_stops`` and
``same_runs`` read a finished comparison folder (``run_files``: packed or not);
``paper_gpu`` runs paper-scale settings in-process on a lent GPU machine.
"""
