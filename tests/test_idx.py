import gzip

import numpy as np
import pytest

from pyrovae.data.idx import IDX_DTYPES, IDX_FILES, find_idx_file, read_idx, write_idx

# a 2x3 unsigned-byte array, written out by hand from the IDX specification
UBYTE_2X3 = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 255])


def test_write_idx_produces_the_bytes_of_the_specification(tmp_path):
    path = write_idx(tmp_path / "a", np.array([[1, 2, 3], [4, 5, 255]], dtype=np.uint8))
    assert path.read_bytes() == UBYTE_2X3
    gz = write_idx(tmp_path / "a.gz", np.array([[1, 2, 3], [4, 5, 255]], dtype=np.uint8), gzip=True)
    assert gz.read_bytes()[:2] == b"\x1f\x8b" and gzip.decompress(gz.read_bytes()) == UBYTE_2X3


def test_read_idx_of_hand_written_bytes(tmp_path):
    (tmp_path / "u8").write_bytes(UBYTE_2X3)
    x = read_idx(tmp_path / "u8")
    assert x.dtype == np.uint8 and x.shape == (2, 3)
    assert x.tolist() == [[1, 2, 3], [4, 5, 255]]
    # big-endian int16: 0x0102 = 258 and 0xFFFE = -2
    (tmp_path / "i16").write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE]))
    y = read_idx(tmp_path / "i16")
    assert y.dtype == np.int16 and y.dtype.isnative and y.tolist() == [258, -2]
    y[0] = 0  # a writable copy, not a view of the file's bytes


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype", [d.newbyteorder("=") for d in IDX_DTYPES.values()], ids=lambda d: d.name)
def test_write_then_read_round_trip(tmp_path, dtype, compress):
    x = (np.arange(2 * 3 * 4).reshape(2, 3, 4) * 7 % 101).astype(dtype)
    path = write_idx(tmp_path / "x-idx3", x, gzip=compress)
    back = read_idx(path)
    assert back.dtype == dtype and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, x)


def test_gzip_is_detected_by_content_not_by_name(tmp_path):
    x = np.arange(6, dtype=np.uint8)
    gz_without_suffix = write_idx(tmp_path / "labels-idx1-ubyte", x, gzip=True)
    raw_with_gz_suffix = write_idx(tmp_path / "labels-idx1-ubyte.gz", x, gzip=False)
    np.testing.assert_array_equal(read_idx(gz_without_suffix), x)
    np.testing.assert_array_equal(read_idx(raw_with_gz_suffix), x)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"has 0 bytes, fewer than the 4-byte IDX magic number.*download it again"),
        (b"\x00\x00", "has 2 bytes, fewer than the 4-byte"),
        (b"\x1f\x00\x08\x01" + bytes(8), r"magic number 0x1F000801; an IDX file starts with two zero bytes"),
        (b"P5\n28 28\n255\n", "this is not an IDX file"),
        (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 0]), r"type code 0x07; expected one of 0x08 \(uint8\)"),
        (bytes([0, 0, 0x08, 0]), "0 dimensions"),
        (bytes([0, 0, 0x08, 3, 0, 0, 0, 2]), "has 8 bytes, fewer than the 16-byte header of a 3-dimensional"),
        (
            UBYTE_2X3[:-2],
            r"is truncated: its header says shape \(2, 3\) of uint8, i.e. 6 data bytes, but 4 follow the header",
        ),
        (UBYTE_2X3 + b"\x00", r"longer than its header says.*6 data bytes, but 7 follow"),
        (
            bytes([0, 0, 0x0D, 1, 0, 0, 0, 3]) + bytes(10),
            r"shape \(3,\) of float32, i.e. 12 data bytes, but 10 follow",
        ),
    ],
    ids=[
        "empty",
        "short",
        "bad-magic",
        "not-idx",
        "bad-type",
        "zero-dims",
        "short-header",
        "truncated",
        "trailing",
        "float-truncated",
    ],
)
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_read_idx_errors(tmp_path, content, message, compress):
    path = tmp_path / "bad-idx"
    path.write_bytes(gzip.compress(content) if compress else content)
    with pytest.raises(ValueError, match=message):
        read_idx(path)


def test_truncated_or_corrupted_gzip(tmp_path):
    packed = gzip.compress(UBYTE_2X3 * 100, mtime=0)
    (tmp_path / "cut.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(
        ValueError, match=r"cut.gz starts like a gzip file but cannot be decompressed.*download it again"
    ):
        read_idx(tmp_path / "cut.gz")
    garbled = bytearray(packed)
    garbled[12:20] = b"\xff" * 8
    (tmp_path / "bad.gz").write_bytes(bytes(garbled))
    with pytest.raises(ValueError, match="cannot be decompressed"):
        read_idx(tmp_path / "bad.gz")


def test_read_idx_missing_file_or_folder(tmp_path):
    with pytest.raises(ValueError, match=r"no IDX file at .*nope: check the path"):
        read_idx(tmp_path / "nope")
    with pytest.raises(ValueError, match="is a directory"):
        read_idx(tmp_path)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros(3, dtype=np.int64), r"cannot store dtype int64; expected one of .*astype\(np.uint8\)"),
        (np.zeros(3, dtype=bool), "cannot store dtype bool"),
        (np.uint8(3), "1 to 255 dimensions, got 0"),
    ],
    ids=["int64", "bool", "scalar"],
)
def test_write_idx_errors(tmp_path, array, message):
    with pytest.raises(ValueError, match=message):
        write_idx(tmp_path / "x", array)
    assert not (tmp_path / "x").exists()


def test_find_idx_file(tmp_path):
    stem = IDX_FILES["train_images"]
    assert stem == "train-images-idx3-ubyte"
    assert find_idx_file(tmp_path, stem) is None
    (tmp_path / "train-images.idx3-ubyte").write_bytes(b"")  # the spelling of some mirrors
    assert find_idx_file(tmp_path, stem) == tmp_path / "train-images.idx3-ubyte"
    (tmp_path / f"{stem}.gz").write_bytes(b"")
    assert find_idx_file(tmp_path, stem) == tmp_path / f"{stem}.gz"
    (tmp_path / stem).write_bytes(b"")  # the raw file wins over the compressed one
    assert find_idx_file(tmp_path, stem) == tmp_path / stem
