package upstream

import (
	"encoding/binary"

	"github.com/moby/spdystream/spdy"
)

// encoder writes the frames a client session sends besides DATA: PING,
// RST_STREAM, SYN_STREAM and an empty DATA frame that ends a stream.
//
// SPDY/3 compresses header blocks with zlib, one stream per session in
// each direction, primed with the protocol's dictionary. spdystream's
// Framer keeps a compressor at zlib's best compression for that: 790 KiB
// per session, allocated with the first SYN_STREAM and kept for the
// session's life, the largest allocation of an idle tunnel (heap profile
// of 200 idle forwards: 160 of 243 MB). The receiving end only needs a
// valid zlib stream, and stored (uncompressed) deflate blocks are one, so
// the encoder writes header blocks stored: no compression state at all,
// at the cost of a SYN_STREAM about 40 bytes longer. The zlib header goes
// once, before the first header block; each block is a stored block
// followed by an empty one, which is what a zlib sync flush writes and
// what makes the receiving inflater hand the block over at once.
type encoder struct {
	b       []byte // frames are appended here
	started bool   // the zlib header has been written
}

// headerDictionaryID is the Adler-32 checksum of SPDY/3's header
// dictionary, which a zlib stream primed with it carries in its header
// (checked against spdystream's own encoder in the tests).
const headerDictionaryID = 0xe3c6a7c2

// zlibHeader: deflate with a 32 KiB window (0x78); a preset dictionary,
// the fastest level, and the check bits that make the pair a multiple of 31.
var zlibHeader = [2]byte{0x78, 0x20}

func (e *encoder) control(typ spdy.ControlFrameType, flags uint8, length int) {
	e.b = binary.BigEndian.AppendUint32(e.b, 0x80000000|spdy.Version<<16|uint32(typ))
	e.b = binary.BigEndian.AppendUint32(e.b, uint32(flags)<<24|uint32(length))
}

func (e *encoder) ping(id uint32) {
	e.control(spdy.TypePing, 0, 4)
	e.b = binary.BigEndian.AppendUint32(e.b, id)
}

func (e *encoder) rstStream(id uint32, status spdy.RstStreamStatus) {
	e.control(spdy.TypeRstStream, 0, 8)
	e.b = binary.BigEndian.AppendUint32(e.b, id&0x7fffffff)
	e.b = binary.BigEndian.AppendUint32(e.b, uint32(status))
}

// fin ends our side of a stream with an empty DATA frame.
func (e *encoder) fin(id uint32) {
	e.b = binary.BigEndian.AppendUint32(e.b, id&0x7fffffff)
	e.b = binary.BigEndian.AppendUint32(e.b, uint32(spdy.DataFlagFin)<<24)
}

// synStream opens stream id with headers, given as lowercase name, value
// pairs; fin half-closes it at once.
func (e *encoder) synStream(id uint32, fin bool, headers ...string) {
	block := 4
	for _, s := range headers {
		block += 4 + len(s)
	}
	// Deflate stores at most 65535 bytes per block; our header blocks are
	// a hundred bytes or so.
	if block > 0xffff || len(headers)%2 != 0 {
		panic("upstream: unsupported header block")
	}
	length := 10 + 5 + block + 5 // IDs, priority and slot; a stored block; the empty one
	if !e.started {
		length += 6
	}
	var flags uint8
	if fin {
		flags = uint8(spdy.ControlFlagFin)
	}
	e.control(spdy.TypeSynStream, flags, length)
	e.b = binary.BigEndian.AppendUint32(e.b, id&0x7fffffff)
	e.b = append(e.b, 0, 0, 0, 0, 0, 0) // associated stream, priority, slot
	if !e.started {
		e.b = append(e.b, zlibHeader[:]...)
		e.b = binary.BigEndian.AppendUint32(e.b, headerDictionaryID)
		e.started = true
	}
	// A stored block: BFINAL 0 and BTYPE 00 padded to a byte, then its
	// length and the length's complement, little-endian.
	e.b = append(e.b, 0)
	e.b = binary.LittleEndian.AppendUint16(e.b, uint16(block))
	e.b = binary.LittleEndian.AppendUint16(e.b, ^uint16(block))
	e.b = binary.BigEndian.AppendUint32(e.b, uint32(len(headers)/2))
	for _, s := range headers {
		e.b = binary.BigEndian.AppendUint32(e.b, uint32(len(s)))
		e.b = append(e.b, s...)
	}
	e.b = append(e.b, 0, 0, 0, 0xff, 0xff) // the empty stored block of a sync flush
}
