"""How does the ServerApp scale with the number of simulated SuperNodes? (``nodes``)"""
