"""Where does a run's time go, and what makes it faster without changing its numbers?

``step_time`` times one training step per width, layout and precision; ``round_profile``
profiles a whole in-process run by CPU time; ``threads`` times rounds with and without
torch threads pinned per Ray actor; ``allocator`` picks the runs' ``malloc``
(``compare --allocator``).
"""
