"""The GNU Radio ZMQ bridge: ``flowgraph.py`` runs under the system Python that has GNU Radio
(it imports nothing from the project); ``process.py`` starts and stops it from the project;
``client.py`` (``Bridge``) holds the sockets and the clocking that the nodes of one flowgraph
share (``hardware.drivers.gnuradio.ZmqRadio`` is one node)."""
