// Package upstream is kforward's data path: one upgraded port-forward
// connection to a pod (Dial, over WebSocket or SPDY), the stream pair that
// carries each local connection over it (Conn.Forward), and its health
// check (Conn.Ping). Package forward decides which pod and when to redial;
// this package moves the bytes.
//
// # Why not spdystream's session
//
// The kubelet speaks SPDY/3.1 inside the upgraded connection but implements
// no flow control (no WINDOW_UPDATE), so one TCP connection carries every
// stream with no per-stream backpressure. spdystream's client hands each
// DATA frame from its one reader, through a queue and a worker, to the
// stream's unbuffered channel: when one local client stops reading, the
// worker blocks, its queue fills, the reader blocks, and every other stream
// stalls, health checks included. Measured on the dev cluster (issue 10):
// one client asking for 1 GiB and never reading left 0 of 9 other requests
// answered in 30s, for the old kforward and for kubectl alike. The same
// pipeline costs goroutine hand-offs per frame: ~30% of a download's CPU
// was the scheduler.
//
// So the session is ours (conn.go). Its reader parses frames from a buffer
// of up to 128 KiB and never blocks on a local client. A DATA payload is first
// written to the local socket without waiting (tryWrite: a non-blocking
// write straight from the read buffer, no copy and no hand-off, which
// carries nearly all data while the client keeps up); what the socket does
// not take is copied into the pair's queue, which the pair's own goroutine
// drains with writev. Only that connection waits on its client.
//
// # The decision: nothing dropped for a client that reads
//
// There is no way to slow the kubelet for one stream, so a client slower
// than its pod must either get its own upgraded connection (real TCP
// backpressure) or have its unread data held. A connection per local
// connection costs a TLS handshake, an authorised upgrade on the API
// server and a new connection to the kubelet each time: new-connection
// latency several times kubectl's, and API-server load an operator would
// notice. So data is held, in three tiers (pair.keep):
//
//  1. Memory: each pair may hold Options.ClientBuffer unread bytes (the
//     file's clientBuffer, default 16 MiB), all pairs of a Conn together
//     BudgetFactor × that.
//  2. Disk, past memory: the rest goes to a temporary file of the pair's
//     (Overflow, spill.go), all of a forward's together at most the file's
//     diskBuffer (default 1 GiB). Each file is removed from its directory
//     when made (it vanishes when closed or when the process ends, however
//     it ends), in the user's cache directory rather than a /tmp that may
//     be memory, and gives its space back as the client reads it.
//  3. TCP, past the disk: the session's reader waits for that client, as
//     kubectl's does for every client, and the pod's data backs up in TCP.
//     The tunnel then takes no new streams (ErrClientsBehind): the forward
//     opens another for new connections, and streams not yet answered go
//     there at once. A held tunnel counts as alive (Ping).
//
// Why this and not the file per forward, or a tunnel of its own for a
// connection that falls behind: the stream of a connection that fell
// behind cannot move to another tunnel (its data comes on this one), so
// a tunnel of its own helps only what comes after, and the pg_dump that
// motivated this (issue 20: 3 dumps of 3 cut off at 16 MiB unread, where
// kubectl's succeeded) needs what has already come. pg_dump -Fc -Z 9
// compresses as it reads, so it falls further behind the pod the larger
// the table: the backlog of a 200 MB table is many times any sensible
// memory bound for one connection of one forward, and holding the tunnel
// for it instead would stall its neighbours for the dump's length. Disk is
// plentiful and page-cached, and a file per
// connection keeps each client's bytes in order with no index.
//
// The other end of the rule: a client that reads nothing at all for
// Options.StallTimeout (the file's stallTimeout, default 2 minutes) is
// closed with ErrClientStalled, and what it left is given back. Until
// then it costs disk, not its neighbours' time: the reader writes its data
// to the file and goes on (e2e TestStalledClient: 80 of 80 requests beside
// a client stalled on 1 GiB answered, slowest 0.3-0.5 s).
//
// The other direction has no such fix: when a pod stops reading what its
// client sends, the kubelet's session blocks on it, and the TCP connection
// backs up for every stream. Only the kubelet can isolate that.
//
// # Writing
//
// writer.go serialises frames without a goroutine of its own: a writer
// that finds the connection idle writes its frame itself; writers arriving
// meanwhile append to a pending buffer that the one in progress flushes in
// one write. Control frames are encoded under that lock (frames.go, see
// Memory below), so stream IDs reach the wire in increasing order, as the
// kubelet requires. A pair's two
// SYN_STREAMs (the error stream already half-closed) go out in one write
// and the pair waits only for the data stream's reply: one round trip to
// open, where kubectl waits for two.
//
// Control frames never wait behind data: they have a queue of their own,
// written before queued DATA and between the pieces (maxSend, 64 KiB) of
// a large batch of it, and the kernel holds little unsent data
// (TCP_NOTSENT_LOWAT, 128 KiB, as HTTP/2 servers set it), so the order is
// decided here rather than in a send buffer of megabytes. Before, on a
// 512 KiB/s uplink a health check's PING waited behind a 20 MiB upload
// long enough to fail (issue 20: the tunnel was redialed after 13-14.5
// MB, cutting every connection). Now a PING queued behind four uploads is
// read by the server after 531 bytes of them (TestControlFramesOvertakeData,
// against 512 KiB queued). What the server makes us owe it (echoes of its
// PINGs, refusals of its SYN_STREAMs) is bounded (maxProvoked): a server
// that asks and does not read kills the session rather than grow the
// queue (before, 256 MiB of pings grew the heap by 287 MiB).
//
// # Ending a pair quietly
//
// The kubelet logs an error for a stream pair left incomplete after its
// stream creation timeout, and for a port-forward that returns an error.
// A pair is therefore always opened whole; after a clean end (the pod's
// side ended) a half-close is all the kubelet needs to finish its side;
// streams are reset only when the local client failed or stalled.
//
// # Ending a session quietly
//
// The API server logs an error for a tunnel whose client reset its TCP
// connection ("Error proxying data from client to backend ... connection
// reset by peer", or "backend to client ... broken pipe"). A client's
// kernel sends that reset when it closes a socket that still has unread
// data or then receives any: the server's TLS close_notify, a ping's echo
// in flight. So Close ends a healthy session in order, within 250 ms: the
// WebSocket close frame, a TCP half-close, then whatever the server still
// sends, read and dropped until it closes its end; only then the socket.
// A session whose last ping went unanswered is closed at once: nothing
// would come, and its redial would wait for nothing.
// Closing at once gave that error in 11 of 80 runs of e2e
// TestTunnelsEndQuietly; in none of 80 runs since.
// A dial cancelled during its upgrade (a forward stopped by a reload) is
// no exception: the upgrade gets handshakeGrace to complete and its new
// session is then closed the same way (dial.go, withGrace and cancelled),
// since an upgrade cut short is logged too ("error dialing backend:
// context canceled").
//
// # Where the CPU goes, and what was done about it
//
// On this path the forwarder's work is syscalls and waking up, not
// computation (AES-GCM is about 5%). Profiles (kforward run --cpuprofile)
// and syscall counts (strace -c, per 256 MiB WebSocket download, 2 cores)
// drove each change:
//
//   - Reads: TLS reads the socket about one record (16 KiB) at a time.
//     bufConn, a buffered reader beneath TLS, takes whatever the socket
//     holds, up to 128 KiB: about 1,500 reads where kubectl makes about
//     9,100.
//   - Writes to local clients: one writev per run of frames of the same
//     stream that one read brought, straight from the read buffer
//     (tryWrite), instead of a copy and a hand-off per frame.
//   - Writes upstream: frames combine while a write is in progress, each
//     batch of TLS records leaves in one syscall (bufConn.hold/release),
//     and uploads use frames that grow to 128 KiB.
//   - Threads: with two Ps the Go scheduler woke a second thread, and
//     sysmon, at nearly every arrival of data: 7,477 futex calls against
//     kubectl's 3,739. kforward runs on one P (cmd/kforward's main; the
//     GOMAXPROCS variable overrides it): 1,658. One P still carries a few
//     hundred MB/s, since syscalls release it.
//
// The result, side by side with kubectl in one run of make bench: 0.44-0.56
// of its CPU per GiB, 1.2-1.6 times its throughput, 0.63 of its new
// connection time (BENCHMARKS.md).
//
// # Memory: what an idle tunnel holds
//
// Each forward has a tunnel of its own, and most are idle most of the
// time, so what an idle tunnel holds is what kforward costs at scale. A
// heap profile of 200 idle forwards (make bench's scale scenario, 166 MiB
// RSS) had 243 MB of heap, about 1.15 MB per tunnel:
//
//   - 790 KB: spdystream's header compressor, zlib at its best compression,
//     made with a session's first SYN_STREAM and kept for its life.
//   - 256 KiB: two 128 KiB read buffers, the session's and bufConn's, each
//     held by the read that waits for the next byte.
//   - 32 KiB: gorilla's read buffer (WebSocket).
//
// Heap is not RSS: a buffer nobody wrote to costs no resident page, so the
// read buffers of tunnels that had carried a few bytes hardly showed, and
// removing the compressor alone took the 200 forwards from 166 to 60 MiB.
// But once every forward had carried 1 MiB, the same 200 held 128 MiB, and
// 167 MiB after the API server restarted and every tunnel redialled
// (e2e, one run). So none of it is held while nothing flows:
//
//   - Header blocks are written stored: uncompressed deflate blocks in the
//     session's zlib stream (with the SPDY dictionary's ID in its header),
//     which the kubelet's inflater reads like any other. frames.go encodes
//     our four frames (SYN_STREAM, RST_STREAM, PING, an empty FIN) itself:
//     no compression state at all, for SYN_STREAMs about 40 bytes longer,
//     two per new connection.
//   - The session reads through frameReader (reader.go): with nothing
//     buffered it reads into 1 KiB inside the Conn, which pings, their
//     answers, replies and short exchanges fit; a frame that does not fit
//     takes a 128 KiB buffer, which goes back as soon as everything read
//     has been consumed. A frame's header stays buffered until the frame
//     is consumed, so a read with nothing buffered, the one an idle tunnel
//     waits in, is always between frames, into 1 KiB.
//   - bufConn reads the socket itself (RawConn.Read): it takes a large
//     buffer only to read what the socket holds, and when the socket is
//     empty gives it back before it waits (the read that finds it empty is
//     the one Go's own Read makes before waiting). Where the socket is not
//     reachable (no syscall.Conn; not Unix), it reads into TLS's own
//     buffer until a read fills it, then through a large one.
//   - The large read buffers come from a free list of at most 16 (2 MiB),
//     not a sync.Pool: under the race detector a sync.Pool drops a quarter
//     of what it is given, and a fresh 128 KiB buffer there is dear enough
//     to slow a busy reader severalfold (TestStalledClient under -race:
//     0.7-1.0 s with sync.Pool, 0.35-0.5 s with the free list; without
//     -race the same either way).
//   - Write batches (the writer's pending frames, bufConn's TLS records)
//     come from a pool and go back when the writer is idle; gorilla reads
//     through 4 KiB, which its frame headers need (payloads go straight to
//     our buffer); the SPDY upgrade's reader is dropped once drained.
//
// TestIdleTunnelHoldsNoLargeBuffers checks these from inside the reads and
// waits themselves. A heap profile of the same 200 idle forwards then had
// 14-18 KB per tunnel (measured with a sync.Pool in the free list's
// place), nearly all TLS's (the record buffer its handshake
// grew, AES-GCM state, the certificates). A busy tunnel holds what it did:
// two 128 KiB buffers, for as long as data flows. The cost while data
// flows, each time the session's large buffer runs empty: a read into the
// small one, a copy of at most 1 KiB and two free-list operations, no
// syscall (beneath is TLS or the WebSocket tunnel). Figures, before and
// after, in BENCHMARKS.md.
//
// # Health
//
// Ping sends a SPDY PING. The API server proxies the upgraded bytes (for
// WebSocket it unwraps the frames), and the kubelet's spdystream answers:
// checked on kube-apiserver 1.36 with kwok 0.8 on both transports, answered
// in 0.5-1.8 ms, unanswered while the kubelet is stopped. A ping opens no
// stream, so the kubelet has nothing to log, and since the reader never
// blocks, its answer is read however busy the connection is. A stream whose
// reply is late is not enough to call a tunnel dead (a burst of new
// connections can keep a kubelet busy): it takes an unanswered ping too.
//
// A busy link is not a dead one. On a full uplink the PING waits behind
// data in the network's queues, on a full downlink its echo does, and
// neither is ours to reorder. So a ping without an echo in time on a
// tunnel that moved data meanwhile is ErrBusy, which callers count as
// alive. Moved means, on Linux, the kernel's TCP_INFO counts: bytes the
// peer acknowledged (more than the ping itself, whose acknowledgement
// proves only the API server alive) or bytes received; elsewhere the
// session's own counts of bytes written and read. Only a tunnel that
// neither answers nor moves data for the health timeout is dead, so a
// blackholed link is found as fast as before (e2e TestSlowUplinkUpload:
// a 20 MiB upload at 512 KiB/s with no redial, then the link blackholed
// and found dead after 1.5 s with a 1 s interval and timeout).
//
// A GOAWAY names the last stream the server took: streams above it were
// not processed, and their connections go to another tunnel at once
// (ErrNoStream), rather than wait for replies that will not come.
package upstream
