"""Emulated radios for tests, benchmarks and benches without hardware: the mock radio
(``mock.py``) on a shared RF medium (``medium.py``) set from the simulated task (``scene.py``),
an ADALM-Pluto over libiio's network protocol (``iiod.py``, ``pluto_model.py``), and the GNU
Radio bridge's emulate-mode flowgraph (``bridge.py``). Real drivers never import these."""
