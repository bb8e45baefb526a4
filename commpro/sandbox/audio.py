"""The audio the sandbox serves for a recording: silence, as WAV or as MP3, as long as it lasted.

The MP3 is a run of valid MPEG-1 Layer III frames (32 kbit/s, 32 kHz, mono, no CRC): each a
4-byte header and 140 zero bytes, which decode as silence. 144 bytes a frame, 1152 samples
(36 ms), so any MP3 reader sees a stream of the right duration.
"""

from __future__ import annotations

import io
import math
import wave

# sync (11 bits) | MPEG-1 | Layer III | no CRC ; 32 kbit/s | 32 kHz | no padding ; mono, original
MP3_FRAME_HEADER = bytes([0xFF, 0xFB, 0x18, 0xC4])
MP3_FRAME_BYTES = 144  # 144 * bitrate / sample rate
MP3_FRAME_S = 1152 / 32000


def wav_silence(seconds: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(b"\x80" * 8000 * seconds)
    return buf.getvalue()


def mp3_silence(seconds: int) -> bytes:
    frames = max(1, math.ceil(seconds / MP3_FRAME_S))
    frame = MP3_FRAME_HEADER + bytes(MP3_FRAME_BYTES - len(MP3_FRAME_HEADER))
    return frame * frames
