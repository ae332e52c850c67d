"""The radio-facing side: radio interface, drivers (mock, Pluto, GNU Radio bridge), per-band
SINR from IQ, and the measured network backend."""
