"""The radio-facing side. At the top: the radio protocol and hard limits (``radio.py``), the
``hardware:`` config section (``config.py``), the per-band pilot DSP (``dsp.py``), the only path
to radiate (``transmitter.py``) and the measured network backend (``measured.py``). Real
drivers in ``drivers/``, the GNU Radio bridge in ``gnuradio_bridge/``, emulated radios in
``emulated/``. Imports only ``sim``; building a backend from a config is ``testbed.backends``."""
