"""Reading text files line by line with errors that name the file and line."""

from wsnn.data.dataset import DataError, where


def read_lines(path):
    """Yields (line_number, text) for each line of a UTF-8 file, newline stripped.

    Raises:
      DataError: the file is missing, or a line is not valid UTF-8
        (message `path:line: ...`).
    """
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where(path, number)}: not UTF-8 text "
                                f"(byte {raw[e.start:e.start + 1]!r} at column {e.start + 1})") from None
            yield number, text.rstrip("\r\n")
