"""A GNU Radio flowgraph on gr-iio's own Pluto blocks (run by test_iiod_clients.py under /usr/bin/python3):
a tone through ``fmcomms2_sink_fc32`` and ``fmcomms2_source_fc32`` on one Pluto URI for ``seconds``.

    /usr/bin/python3 gr_iio_loopback.py URI SAMPLE_RATE_HZ TONE_HZ SECONDS OUT.npy

Writes the last 2^16 received samples (complex64) to OUT.npy and prints the number of samples
the source streamed and the seconds it ran.
"""
import sys
import time

import numpy as np
from gnuradio import analog, blocks, gr, iio


def main() -> None:
    uri, fs, tone_hz, seconds, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    lo_hz, buffer_size, keep = 2_400_000_000, 32768, 1 << 16
    tb = gr.top_block()
    src = iio.fmcomms2_source_fc32(uri, [True, True], buffer_size)
    src.set_len_tag_key("")
    src.set_frequency(lo_hz)
    src.set_samplerate(fs)
    src.set_gain_mode(0, "manual")
    src.set_gain(0, 0.0)
    src.set_quadrature(True)
    src.set_rfdc(True)
    src.set_bbdc(True)
    src.set_filter_params("Off", "", 0.0, 0.0)
    sink = iio.fmcomms2_sink_fc32(uri, [True, True], buffer_size, False)
    sink.set_len_tag_key("")
    sink.set_bandwidth(fs)
    sink.set_frequency(lo_hz)
    sink.set_samplerate(fs)
    sink.set_attenuation(0, 10.0)
    sink.set_filter_params("Off", "", 0.0, 0.0)
    tone = analog.sig_source_c(fs, analog.GR_COS_WAVE, tone_hz, 0.5)
    skip = blocks.skiphead(gr.sizeof_gr_complex, int(fs * seconds))
    head = blocks.head(gr.sizeof_gr_complex, keep)
    last = blocks.vector_sink_c()
    tb.connect(tone, sink)
    tb.connect(src, skip, head, last)
    start = time.monotonic()
    tb.start()
    while len(last.data()) < keep and time.monotonic() - start < seconds + 20:
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    tb.stop()
    tb.wait()
    np.save(out, np.asarray(last.data(), np.complex64))
    print(skip.nitems_read(0), f"{elapsed:.3f}", flush=True)


if __name__ == "__main__":
    main()
