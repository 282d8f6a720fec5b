package upstream

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/moby/spdystream/spdy"
	corev1 "k8s.io/api/core/v1"
)

// Our zlib header names the dictionary spdystream's own encoder primes its
// compressor with.
func TestEncoderDictionaryID(t *testing.T) {
	var b bytes.Buffer
	f, err := spdy.NewFramer(&b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFrame(&spdy.SynStreamFrame{StreamId: 1, Headers: http.Header{"A": {"b"}}}); err != nil {
		t.Fatal(err)
	}
	// 8 bytes of frame header, 10 of IDs, priority and slot, then the zlib
	// header: 2 bytes, and the dictionary's ID.
	if got := binary.BigEndian.Uint32(b.Bytes()[20:]); got != headerDictionaryID {
		t.Fatalf("spdystream's dictionary ID is %#x, ours %#x", got, headerDictionaryID)
	}
}

// Every frame the encoder writes is read back by spdystream's Framer, the
// kubelet's parser, as what was meant: many SYN_STREAMs in a row (the
// header stream is one zlib stream across them), between other frames.
func TestEncoderFramesDecode(t *testing.T) {
	var e encoder
	type want struct {
		frame   string
		id      uint32
		fin     bool
		headers map[string]string
	}
	var wants []want
	for i := range 50 {
		id, port, req := uint32(4*i+1), strconv.Itoa(1000+i), strconv.Itoa(i)
		e.synStream(id, true, headerStreamType, corev1.StreamTypeError, headerPort, port, headerRequestID, req)
		e.synStream(id+2, false, headerStreamType, corev1.StreamTypeData, headerPort, port, headerRequestID, req)
		wants = append(wants,
			want{"syn", id, true, map[string]string{corev1.StreamType: corev1.StreamTypeError, corev1.PortHeader: port, corev1.PortForwardRequestIDHeader: req}},
			want{"syn", id + 2, false, map[string]string{corev1.StreamType: corev1.StreamTypeData, corev1.PortHeader: port, corev1.PortForwardRequestIDHeader: req}})
		switch i % 3 {
		case 0:
			e.ping(uint32(2*i + 1))
			wants = append(wants, want{frame: "ping", id: uint32(2*i + 1)})
		case 1:
			e.rstStream(id+2, spdy.Cancel)
			wants = append(wants, want{frame: "rst", id: id + 2})
		case 2:
			e.fin(id + 2)
			wants = append(wants, want{frame: "data", id: id + 2, fin: true})
		}
	}
	f, err := spdy.NewFramer(io.Discard, bytes.NewReader(e.b))
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range wants {
		frame, err := f.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d (%s %d): %v", i, w.frame, w.id, err)
		}
		var got want
		switch fr := frame.(type) {
		case *spdy.SynStreamFrame:
			got = want{"syn", uint32(fr.StreamId), fr.CFHeader.Flags&spdy.ControlFlagFin != 0, map[string]string{}}
			for k := range fr.Headers {
				got.headers[http.CanonicalHeaderKey(k)] = fr.Headers.Get(k)
			}
			w.headers = canonical(w.headers)
		case *spdy.PingFrame:
			got = want{frame: "ping", id: fr.Id}
		case *spdy.RstStreamFrame:
			got = want{frame: "rst", id: uint32(fr.StreamId)}
			if fr.Status != spdy.Cancel {
				t.Fatalf("frame %d: reset status %d", i, fr.Status)
			}
		case *spdy.DataFrame:
			got = want{frame: "data", id: uint32(fr.StreamId), fin: fr.Flags&spdy.DataFlagFin != 0}
			if len(fr.Data) != 0 {
				t.Fatalf("frame %d: %d bytes of data", i, len(fr.Data))
			}
		default:
			t.Fatalf("frame %d: %T", i, frame)
		}
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Fatalf("frame %d: read %v, want %v", i, got, w)
		}
	}
	if _, err := f.ReadFrame(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
}

func canonical(h map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		out[http.CanonicalHeaderKey(k)] = v
	}
	return out
}
