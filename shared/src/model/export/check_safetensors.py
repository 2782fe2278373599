"""Reads a safetensors file with the Python standard library only (struct, json) and prints
what it found as one JSON line: header length, metadata, every tensor's dtype/shape/offsets,
and for each tensor its first and last value plus the sum of its values. fedssl's export test
runs it to cross-check the TypeScript writer with an independent reader.

    python3 check_safetensors.py model.safetensors
"""
import json
import struct
import sys


def main(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    data = raw[8 + n :]
    meta = header.pop("__metadata__", {})
    tensors = {}
    end = 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, stop = info["data_offsets"]
        assert info["dtype"] == "F32", name
        assert begin == end, "tensors must be contiguous: %s" % name
        count = 1
        for d in info["shape"]:
            count *= d
        assert stop - begin == 4 * count, name
        values = struct.unpack("<%df" % count, data[begin:stop])
        tensors[name] = {
            "shape": info["shape"],
            "offsets": [begin, stop],
            "first": values[0] if values else None,
            "last": values[-1] if values else None,
            "sum": sum(values),
        }
        end = stop
    assert end == len(data), "data length %d, header describes %d" % (len(data), end)
    print(json.dumps({"headerBytes": n, "aligned": (8 + n) % 8 == 0, "metadata": meta, "tensors": tensors}))


if __name__ == "__main__":
    main(sys.argv[1])
