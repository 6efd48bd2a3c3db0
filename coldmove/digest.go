package coldmove

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
)

// DigestBlockBytes is the block size of the artifact checksum.
const DigestBlockBytes = 1 << 20

// DigestPrefix names the checksum scheme in journals and output.
const DigestPrefix = "sha256-1m:"

var zeroBlock = make([]byte, DigestBlockBytes)

// Digest is the checksum ferry computes on both ends of a copy: SHA-256 over
// the list of (block index, SHA-256 of the block) of every 1 MiB block that
// is not all zeros, then the total length. It equals for equal contents
// whatever parts of them travelled as holes, so a sparse stream is hashed
// without feeding gigabytes of zeros through SHA-256, and a dense stream of
// the same bytes gives the same digest.
type Digest struct {
	outer   hash.Hash
	block   hash.Hash
	fill    int64 // bytes of the current block seen
	nonZero bool  // the current block has a non-zero byte
	index   uint64
	total   int64
	sum     string
}

// NewDigest starts an empty digest.
func NewDigest() *Digest { return &Digest{outer: sha256.New(), block: sha256.New()} }

// Write adds data.
func (d *Digest) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(int64(len(p)), DigestBlockBytes-d.fill)
		chunk := p[:k]
		if !d.nonZero && !bytes.Equal(chunk, zeroBlock[:k]) {
			d.nonZero = true
		}
		d.block.Write(chunk)
		d.fill += k
		d.total += k
		p = p[k:]
		if d.fill == DigestBlockBytes {
			d.endBlock()
		}
	}
	return n, nil
}

// Hole adds length zero bytes.
func (d *Digest) Hole(length int64) error {
	for length > 0 {
		if d.fill == 0 && length >= DigestBlockBytes {
			blocks := length / DigestBlockBytes
			d.index += uint64(blocks)
			d.total += blocks * DigestBlockBytes
			length -= blocks * DigestBlockBytes
			continue
		}
		k := min(length, DigestBlockBytes-d.fill)
		d.block.Write(zeroBlock[:k])
		d.fill += k
		d.total += k
		length -= k
		if d.fill == DigestBlockBytes {
			d.endBlock()
		}
	}
	return nil
}

func (d *Digest) endBlock() {
	if d.nonZero {
		var idx [8]byte
		binary.BigEndian.PutUint64(idx[:], d.index)
		d.outer.Write(idx[:])
		d.outer.Write(d.block.Sum(nil))
	}
	d.block.Reset()
	d.fill, d.nonZero = 0, false
	d.index++
}

// Len is the number of bytes (data and holes) seen.
func (d *Digest) Len() int64 { return d.total }

// Sum finishes the digest; later writes are ignored by it.
func (d *Digest) Sum() string {
	if d.sum != "" {
		return d.sum
	}
	if d.fill > 0 {
		d.endBlock()
	}
	var l [8]byte
	binary.BigEndian.PutUint64(l[:], uint64(d.total))
	d.outer.Write(l[:])
	d.sum = DigestPrefix + hex.EncodeToString(d.outer.Sum(nil))
	return d.sum
}
