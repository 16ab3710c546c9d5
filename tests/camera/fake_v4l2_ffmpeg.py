"""Stand-in for `ffmpeg` in front of a camera that is not there: answers -list_formats with a
recorded listing and captures from recorded frames, running the real ffmpeg for all the work.

Environment: REAL_FFMPEG, LISTING (file with the -list_formats text), RAW_YUYV (raw yuyv422
frames), RAW_SIZE (WxH of those frames), MJPEG (an MJPEG file), ARGV_LOG (argv lines appended).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    with open(os.environ["ARGV_LOG"], "a", encoding="utf-8") as log:
        log.write(" ".join(argv) + "\n")
    if "-list_formats" in argv:
        with open(os.environ["LISTING"], encoding="utf-8") as listing:
            sys.stderr.write(listing.read())
        sys.stderr.write(f"{argv[-1]}: Immediate exit requested\n")
        sys.exit(1)
    start = argv.index("v4l2") - 1
    end = argv.index("-i", start) + 2
    options = dict(zip(argv[start:end:2], argv[start + 1 : end : 2], strict=True))
    if options["-input_format"] == "mjpeg":
        source = ["-f", "mjpeg", "-i", os.environ["MJPEG"]]
    else:
        size = os.environ["RAW_SIZE"]
        source = ["-f", "rawvideo", "-pix_fmt", options["-input_format"], "-video_size", size]
        source += ["-i", os.environ["RAW_YUYV"]]
    real = os.environ["REAL_FFMPEG"]
    os.execv(real, [real, *argv[1:start], *source, *argv[end:]])  # noqa: S606 (argv, no shell)


if __name__ == "__main__":
    main(sys.argv)
