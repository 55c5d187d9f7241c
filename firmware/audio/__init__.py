"""The handset's audio path: jitter buffer, concealment, tones, re-blocking, the per-frame pipeline.

All modules are sans-IO: time comes in as integer milliseconds, audio as 16-bit
signed little-endian PCM in caller-owned buffers (8 kHz, 20 ms = 160 samples =
320 bytes) or G.711 bytes (160 per frame). Buffers are allocated at construction.
"""
