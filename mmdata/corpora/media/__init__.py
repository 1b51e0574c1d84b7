"""Decoding and checking raw audio and video files (shared by audio-visual corpus readers).

Each function either returns clean arrays plus the documented repairs it applied (reason codes that go into
``__repairs__``), or raises :class:`~mmdata.errors.SampleError` with the skip reason (reliability.md
sections 6.4 and 6.5).
"""
