"""The doors to real antennas: ADALM-Pluto (``pluto.py``, pyadi-iio) and a node of the GNU Radio
ZMQ bridge (``gnuradio.py``, a USRP or any radio GNU Radio drives). They import no emulator."""
