"""The GNU Radio ZMQ bridge: ``flowgraph.py`` runs under the system Python that has GNU Radio
(it imports nothing from the project); ``process.py`` starts and stops it from the project."""
