"""Unit tests of the pypool package without a subprocess: registration, Context, framing,
the hand-encoded Response, and the Worker's dispatch driven through a captured send()."""

import array
import os
import threading
import time
import unittest

import harness  # noqa: F401  (puts the built runtime on sys.path)
from harness import pb

import pypool
from pypool import _classic, _frames, _wire


class RegistryIsolation(unittest.TestCase):
    """Each test gets an empty registry; the real one is restored afterwards."""

    def setUp(self):
        self._saved = dict(pypool._registry), dict(pypool._kinds)
        pypool._registry.clear()
        pypool._kinds.clear()

    def tearDown(self):
        for table, saved in zip((pypool._registry, pypool._kinds), self._saved):
            table.clear()
            table.update(saved)


class TestRegistration(RegistryIsolation):
    def test_bare_decorator_uses_function_name(self):
        @pypool.handler
        def echo(payload, ctx):
            return payload

        self.assertIs(pypool._registry["echo"], echo)
        self.assertEqual(echo(b"a", None), b"a")  # still callable directly

    def test_named_decorator(self):
        @pypool.handler("other-name")
        def f(payload, ctx):
            return b""

        self.assertIs(pypool._registry["other-name"], f)
        self.assertNotIn("f", pypool._registry)

    def test_empty_call_decorator(self):
        @pypool.handler()
        def g(payload, ctx):
            return b""

        self.assertIs(pypool._registry["g"], g)

    def test_duplicate_name_raises(self):
        pypool.handler("dup")(lambda p, c: b"")
        with self.assertRaises(ValueError):
            pypool.handler("dup")(lambda p, c: b"")

    def test_same_function_defined_again_replaces_it(self):
        # What importlib.reload does: the module runs again and registers the same names.
        def make():
            def again(payload, ctx):
                return b""
            return again

        first, second = make(), make()
        pypool.handler("again")(first)
        pypool.handler("again")(second)
        self.assertIs(pypool._registry["again"], second)

    def test_same_lambda_run_again_replaces_it(self):
        # A reloaded module runs its `pypool.handler("name")(lambda ...)` line again: same
        # module, same place, a new function object.
        code = compile("import pypool\npypool.handler('l')(lambda p, c: b'')\n", "/x/mod.py",
                       "exec")
        scope = {"__name__": "mod"}
        exec(code, scope)
        first = pypool._registry["l"]
        exec(code, scope)
        self.assertIsNot(pypool._registry["l"], first)
        # Another lambda of that module claiming the name is still a mistake.
        other = compile("import pypool\n\npypool.handler('l')(lambda p, c: b'')\n",
                        "/x/mod.py", "exec")
        with self.assertRaises(ValueError):
            exec(other, scope)

    def test_bad_names(self):
        with self.assertRaises(ValueError):
            pypool.handler("")(lambda p, c: b"")
        with self.assertRaises(TypeError):
            pypool.handler(42)

    def test_handler_names_sorted(self):
        for name in ("b", "a", "c"):
            pypool.handler(name)(lambda p, c: b"")
        self.assertEqual(pypool._handler_names(), ["a", "b", "c"])

    def test_import_is_cheap(self):
        # `import pypool` must not drag in protobuf; run in a fresh interpreter to see.
        import subprocess
        import sys
        # None of the runtime's modules either (pypool._*, pypool.pypool_pb2).
        code = ("import sys, pypool; bad = [m for m in sys.modules "
                "if m.startswith(('google', 'pypool._', 'pypool.pypool_pb2'))]; print(bad)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=harness.RUNTIME_DIR), check=True)
        self.assertEqual(out.stdout.strip(), "[]")

    def test_worker_modules_import_cheaply(self):
        # What only rare paths need (handler exceptions, import failures, modules given as a
        # path, the ctypes type zoo) must not be imported by every worker start.
        import subprocess
        import sys
        code = ("import sys; from pypool import __main__, _boot, _worker, _mux; "
                "_boot.set_parent_death_signal(); "
                "print(sorted(m for m in ('traceback', 'ctypes', 'importlib.util', 'runpy') "
                "if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=harness.RUNTIME_DIR), check=True)
        self.assertEqual(out.stdout.strip(), "[]")

    def test_parent_death_signal_is_set(self):
        # Both routes to prctl: _ctypes directly, and the full ctypes should that fail.
        import subprocess
        import sys
        check = ("import ctypes, signal; v = ctypes.c_int(0); "
                 "ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0); "  # PR_GET_PDEATHSIG
                 "print(v.value == signal.SIGKILL)")
        for setup in ("", "_boot._prctl_via_private_ctypes = lambda: 1 / 0; "):
            code = ("from pypool import _boot; " + setup + "_boot.set_parent_death_signal(); "
                    + check)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 env=dict(os.environ, PYTHONPATH=harness.RUNTIME_DIR), check=True)
            self.assertEqual(out.stdout.strip(), "True", setup or "via _ctypes")


class TestKinds(RegistryIsolation):
    def test_kinds_decided_at_registration(self):
        import functools

        @pypool.handler
        def plain(payload, ctx):
            return b""

        @pypool.handler(threaded=True)
        def threaded(payload, ctx):
            return b""

        @pypool.handler("t2", threaded=True)
        def threaded_named(payload, ctx):
            return b""

        @pypool.handler
        async def coro(payload, ctx):
            return b""

        @pypool.handler
        def gen(payload, ctx):
            yield b""

        @pypool.handler
        async def agen(payload, ctx):
            yield b""

        pypool.handler("partial_gen")(functools.partial(gen))

        class Service:
            async def method(self, payload, ctx):
                return b""

        pypool.handler("bound")(Service().method)
        self.assertEqual(pypool._kinds, {
            "plain": pypool.PLAIN, "threaded": pypool.THREADED, "t2": pypool.THREADED,
            "coro": pypool.ASYNC, "gen": pypool.GENERATOR, "agen": pypool.ASYNC_GENERATOR,
            "partial_gen": pypool.GENERATOR, "bound": pypool.ASYNC})
        self.assertIs(pypool._registry["coro"], coro)  # returned and registered unchanged

    def test_threaded_async_is_refused(self):
        with self.assertRaises(TypeError):
            @pypool.handler(threaded=True)
            async def nope(payload, ctx):
                return b""
        self.assertNotIn("nope", pypool._registry)


class TestHostErrorAndLocalHost(unittest.TestCase):
    def test_host_error(self):
        err = pypool.HostError(7, "failed on purpose")
        self.assertEqual((err.code, err.message), (7, "failed on purpose"))
        self.assertIn("failed on purpose", str(err))
        self.assertIn("7", str(err))

    def test_context_with_a_host_function(self):
        import asyncio
        calls = []
        ctx = pypool.Context(host=lambda name, payload: calls.append((name, payload)) or b"r")
        self.assertEqual(ctx.host("n", "p\u00e9"), b"r")
        self.assertEqual(asyncio.run(ctx.host_async("m", memoryview(b"q"))), b"r")
        self.assertEqual(calls, [("n", "p\u00e9".encode()), ("m", b"q")])
        self.assertFalse(ctx.cancelled())

    def test_context_without_a_host(self):
        saved, pypool._runtime = pypool._runtime, None
        try:
            with self.assertRaises(pypool.HostError) as cm:
                pypool.Context().host("x", b"")
            self.assertEqual(cm.exception.code, -1)
        finally:
            pypool._runtime = saved


class TestContext(unittest.TestCase):
    def test_no_deadline(self):
        ctx = pypool.Context(7, "m", 0, None, None)
        self.assertIsNone(ctx.remaining())
        self.assertEqual((ctx.request_id, ctx.method, ctx.deadline_ms), (7, "m", 0))
        self.assertIsNone(ctx.session)
        self.assertIsNone(ctx.session_id)

    def test_deadline_counts_down(self):
        ctx = pypool.Context(1, "m", 1000, None, None, received_at=time.monotonic() - 0.25)
        self.assertTrue(0.6 < ctx.remaining() <= 0.75, ctx.remaining())
        expired = pypool.Context(1, "m", 10, None, None, received_at=time.monotonic() - 1)
        self.assertEqual(expired.remaining(), 0.0)

    def test_slots(self):
        with self.assertRaises(AttributeError):
            pypool.Context().anything = 1


class TestWire(unittest.TestCase):
    def test_varint(self):
        self.assertEqual(_wire.varint(0), b"\0")
        for value in (1, 127, 128, 300, 2**14 - 1, 2**14, 2**21 - 1, 2**21, 2**32, 2**64 - 1):
            ping = pb.Ping(id=value).SerializeToString()
            self.assertEqual(ping[1:], _wire.varint(value))  # after the 0x08 tag of Ping.id

    def test_ok_response_matches_pb2(self):
        for req_id in (0, 1, 127, 128, 2**63, 2**64 - 1):
            for size in (0, 1, 127, 128, 300, 16383, 16384, 70000):
                payload = os.urandom(size)
                head, body_size = _wire.ok_response_frame(req_id, payload)
                data = head + payload
                self.assertEqual(len(data), 4 + body_size)
                self.assertEqual(_frames.HEADER.unpack(data[:4])[0], body_size)
                env = pb.Envelope.FromString(data[4:])
                self.assertEqual(env.WhichOneof("msg"), "response")
                self.assertEqual(env.response.id, req_id)
                self.assertEqual(env.response.payload, payload)
                self.assertFalse(env.response.HasField("error"))

    def test_ok_response_whole_frame_matches_pb2(self):
        # Ids and sizes around every varint width, and inner sizes on both sides of 128.
        for req_id in (0, 1, 127, 128, 300, 2**14, 2**21, 2**63, 2**64 - 1):
            for size in (0, 1, 100, 110, 120, 127, 128, 300, 16383, 16384):
                payload = os.urandom(size)
                frame = _wire.ok_response(req_id, payload)
                self.assertEqual(_frames.HEADER.unpack(frame[:4])[0], len(frame) - 4)
                self.assertLessEqual(len(frame) - 4 - size, _wire.SMALL_REPLY_OVERHEAD)
                self.assertEqual(frame, b"".join(_wire.ok_response_frame(req_id, payload)[:1])
                                 + payload)
                env = pb.Envelope.FromString(frame[4:])
                self.assertEqual(env.WhichOneof("msg"), "response")
                self.assertEqual((env.response.id, env.response.payload), (req_id, payload))
                if req_id and size:  # pb2 leaves out zero fields; otherwise the same bytes
                    self.assertEqual(frame[4:], env.SerializeToString())
        self.assertEqual(_wire.ok_response(3, memoryview(b"mv")),
                         _wire.ok_response(3, b"mv"))

    def test_decode_small_request_shortcut(self):
        # The byte-level "this is a lone request" check must agree with WhichOneof.
        req = pb.Request(id=300, method="echo", payload=b"x" * 16, session_id="s", deadline_ms=5)
        kind, msg = _wire.decode(pb.Envelope(request=req).SerializeToString())
        self.assertEqual((kind, msg), ("request", req))
        for env in (pb.Envelope(), pb.Envelope(ping=pb.Ping(id=0x12)),
                    pb.Envelope(session_close=pb.SessionClose(session_id="x" * 200))):
            kind, msg = _wire.decode(env.SerializeToString())
            self.assertEqual(kind, env.WhichOneof("msg"))
        # A request followed by a ping is a ping (last oneof field wins), not a request.
        body = pb.Envelope(request=req).SerializeToString() + b"\x22\x00"
        self.assertEqual(_wire.decode(body)[0], "ping")
        # A request longer than 127 bytes takes the WhichOneof path.
        big = pb.Request(id=1, method="echo", payload=b"y" * 300)
        self.assertEqual(_wire.decode(pb.Envelope(request=big).SerializeToString()),
                         ("request", big))

    def test_decode_garbage(self):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the C++ backend warns about the partial parse
            for garbage in (b"hello-not-protobuf", b"\x12\x05\x08\x01", b"\xff"):
                with self.assertRaises(_frames.ProtocolError, msg=garbage):
                    _wire.decode(garbage)

    def test_protocol_2_frames_match_pb2(self):
        for req_id in (1, 300, 2**64 - 1):
            for size in (0, 5, 70000):
                payload = os.urandom(size)
                head, body_size = _wire.chunk_frame(req_id, payload)
                self.assertEqual(len(head) + size, 4 + body_size)
                resp = pb.Envelope.FromString(head[4:] + payload).response
                self.assertEqual((resp.id, resp.payload, resp.more, resp.stream_end),
                                 (req_id, payload, True, False))
        resp = pb.Envelope.FromString(_wire.stream_end_frame(9)[4:]).response
        self.assertEqual((resp.id, resp.more, resp.stream_end, resp.payload), (9, False, True, b""))
        call = pb.Envelope.FromString(_wire.host_call_frame(3, 4, "n", b"p")[4:]).host_call
        self.assertEqual((call.id, call.call_id, call.name, call.payload), (3, 4, "n", b"p"))

    def test_error_text_with_surrogates(self):
        data = _wire.error_frame(1, "E", "bad \udcff byte", "tb")
        env = pb.Envelope.FromString(data[4:])
        self.assertIn("bad", env.response.error.message)


class TestFastRequestParser(unittest.TestCase):
    """The hand parser for big requests must agree with pypool_pb2, or step aside (None)."""

    def check_same(self, body):
        fast = _wire._fast_request(body)
        self.assertIsNotNone(fast)
        ref = pb.Envelope.FromString(body).request
        for name in ("id", "method", "payload", "session_id", "deadline_ms"):
            self.assertEqual(getattr(fast, name), getattr(ref, name), name)

    def test_agrees_with_pb2(self):
        for req_id in (0, 1, 300, 2**64 - 1):
            for deadline in (0, 1, 30000, -5):
                for size in (0, 1, 200, 70000):
                    req = pb.Request(id=req_id, method="m\u00e9thod", payload=os.urandom(size),
                                     session_id="s\u00efd" if size else "", deadline_ms=deadline)
                    self.check_same(pb.Envelope(request=req).SerializeToString())

    def test_field_order_does_not_matter(self):
        inner = b"\x1a\x02hi" + b"\x12\x04echo" + b"\x08\x07"
        self.check_same(b"\x12" + _wire.varint(len(inner)) + inner)

    def test_steps_aside_on_odd_input(self):
        ok = b"\x08\x07" + b"\x12\x04echo"
        odd = [
            b"\x22\x00",                                    # a ping, not a request
            b"\x12\x04" + b"\x08\x07\x08\x08",                # field repeated (last wins in pb)
            b"\x12\x08" + ok + b"\x30\x01",                   # unknown field 6
            b"\x12\x06" + ok + b"\x22\x00",                   # trailing envelope field
            b"\x12\x06" + b"\x08\x07" + b"\x12\x02\xff\xfe",    # method is not UTF-8
            b"\x12\x05" + b"\x12\x09abc",                     # field runs past the end
            b"\x12\x03" + b"\x08\xff\xff",                     # truncated varint
        ]
        for body in odd:
            self.assertIsNone(_wire._fast_request(body), body)

    def test_decode_uses_fast_path_for_big_frames(self):
        body = pb.Envelope(request=pb.Request(id=3, method="echo",
                                              payload=b"p" * (1 << 19))).SerializeToString()
        kind, req = _wire.decode(body)
        self.assertEqual(kind, "request")
        self.assertIsInstance(req, _wire.FastRequest)
        self.assertEqual((req.id, req.method, len(req.payload)), (3, "echo", 1 << 19))


class TestFrames(unittest.TestCase):
    def setUp(self):
        self.r, self.w = os.pipe()

    def tearDown(self):
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass

    def test_clean_eof(self):
        os.close(self.w)
        self.assertIsNone(_frames.FrameReader(self.r, 100).read_frame())

    def test_frames_in_one_read(self):
        os.write(self.w, b"\0\0\0\3abc\0\0\0\0\0\0\0\2de")
        reader = _frames.FrameReader(self.r, 100)
        self.assertEqual([reader.read_frame() for _ in range(3)], [b"abc", b"", b"de"])

    def test_oversize(self):
        os.write(self.w, b"\0\0\0\x65")
        with self.assertRaisesRegex(_frames.ProtocolError, "exceeds"):
            _frames.FrameReader(self.r, 100).read_frame()

    def test_eof_in_header_and_body(self):
        os.write(self.w, b"\0\0")
        os.close(self.w)
        with self.assertRaisesRegex(_frames.ProtocolError, "header"):
            _frames.FrameReader(self.r, 100).read_frame()
        r, w = os.pipe()
        os.write(w, b"\0\0\0\x05ab")
        os.close(w)
        with self.assertRaisesRegex(_frames.ProtocolError, "2 of 5"):
            _frames.FrameReader(r, 100).read_frame()
        os.close(r)

    def test_fd_sender(self):
        send = _frames.fd_sender(self.w)
        send(b"\0\0\0\3abc")
        send(b"\0\0\0\5ab", b"cde")
        tail = os.urandom(_frames.COALESCE_LIMIT + 1)
        writer = threading.Thread(target=send,
                                  args=(_frames.HEADER.pack(len(tail) + 1) + b"x", tail))
        writer.start()
        reader = _frames.FrameReader(self.r, 1 << 20)
        self.assertEqual(reader.read_frame(), b"abc")
        self.assertEqual(reader.read_frame(), b"abcde")
        self.assertEqual(reader.read_frame(), b"x" + tail)
        writer.join()

    def test_big_writev_round_trip(self):
        tail = os.urandom(5 << 20)
        writer = threading.Thread(target=_frames.write_frame,
                                  args=(self.w, _frames.HEADER.pack(len(tail) + 3) + b"abc", tail))
        writer.start()
        body = _frames.FrameReader(self.r, 64 << 20).read_frame()
        writer.join()
        self.assertEqual(body, b"abc" + tail)


class TestBigFrames(unittest.TestCase):
    """Frames of BIG_FRAME bytes or more are read into one reused buffer: check its bookkeeping
    (reuse, growth, release, cut to fit) never shows a frame anything but its own bytes."""

    BIG = _frames.BIG_FRAME

    def setUp(self):
        self.r, self.w = os.pipe()
        self.writers = []

    def tearDown(self):
        for writer in self.writers:
            writer.join(10)
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass

    def send(self, bodies):
        self.send_raw(b"".join(_frames.HEADER.pack(len(b)) + b for b in bodies))

    def send_raw(self, data, close=False):
        """Writes data from a thread (a big frame does not fit the pipe), then closes if asked."""
        def write():
            view = memoryview(data)
            while view:
                view = view[os.write(self.w, view):]
            if close:
                os.close(self.w)

        writer = threading.Thread(target=write)
        writer.start()
        self.writers.append(writer)

    @staticmethod
    def body(size, seed):
        # Distinct content per frame, so a frame showing another's bytes cannot go unnoticed.
        return (bytes([seed & 0xFF]) + os.urandom(15)) * (size // 16) + b"t" * (size % 16)

    def read_all(self, reader, bodies):
        """Reads len(bodies) frames, checking each against its body; returns the frames."""
        got = []
        for i, expected in enumerate(bodies):
            frame = reader.read_frame()
            self.assertEqual(len(frame), len(expected), "frame %d" % i)
            self.assertTrue(frame == expected, "frame %d has other bytes" % i)
            if len(expected) >= self.BIG:
                self.assertIsInstance(frame, memoryview)
            else:
                self.assertIsInstance(frame, bytes)
            got.append(frame)
        return got

    def test_alternating_big_and_small(self):
        sizes = [self.BIG, 5, self.BIG, 0, self.BIG + 100, self.BIG - 1, 3 * self.BIG, 7,
                 self.BIG + 1, 2 * self.BIG]
        bodies = [self.body(size, i) for i, size in enumerate(sizes)]
        self.send(bodies)
        self.read_all(_frames.FrameReader(self.r, 16 << 20), bodies)

    def test_buffer_is_reused_and_grown(self):
        bodies = [self.body(self.BIG + 64, 1), self.body(self.BIG + 64, 2),
                  self.body(self.BIG + 10, 3), self.body(2 * self.BIG, 4),
                  self.body(self.BIG + 64, 5)]
        self.send(bodies)
        reader = _frames.FrameReader(self.r, 16 << 20)
        frames = self.read_all(reader, bodies)
        # Same buffer while frames fit it; a bigger frame gets a bigger one, which stays.
        self.assertIs(frames[0].obj, frames[1].obj)
        self.assertIs(frames[0].obj, frames[2].obj)
        self.assertIsNot(frames[3].obj, frames[0].obj)
        self.assertIs(frames[4].obj, frames[3].obj)
        self.assertEqual(reader._big_buffer_size(), 2 * self.BIG)

    def test_released_after_a_run_of_small_frames_then_big_again(self):
        first, again = self.body(self.BIG, 1), self.body(self.BIG + 3, 2)
        small = [b"s%d" % i for i in range(_frames.SHRINK_AFTER)]
        self.send([first] + small + [again])
        reader = _frames.FrameReader(self.r, 16 << 20)
        self.read_all(reader, [first] + small[:-1])
        self.assertEqual(reader._big_buffer_size(), self.BIG)  # not yet: one small frame short
        self.read_all(reader, small[-1:])
        self.assertEqual(reader._big_buffer_size(), 0)
        self.read_all(reader, [again])
        self.assertEqual(reader._big_buffer_size(), self.BIG + 3)

    def test_cut_to_fit_after_a_run_of_much_smaller_big_frames(self):
        huge = self.body(4 * self.BIG, 0)
        smaller = [self.body(self.BIG, i) for i in range(1, _frames.SHRINK_AFTER + 2)]
        self.send([huge] + smaller)
        reader = _frames.FrameReader(self.r, 16 << 20)
        self.read_all(reader, [huge] + smaller[:-2])
        self.assertEqual(reader._big_buffer_size(), 4 * self.BIG)
        self.read_all(reader, smaller[-2:])
        self.assertEqual(reader._big_buffer_size(), self.BIG)

    def test_eof_inside_a_big_frame(self):
        self.send_raw(_frames.HEADER.pack(2 * self.BIG) + bytes(self.BIG), close=True)
        with self.assertRaisesRegex(_frames.ProtocolError, "%d of %d" % (self.BIG, 2 * self.BIG)):
            _frames.FrameReader(self.r, 16 << 20).read_frame()

    def test_oversize_big_frame(self):
        os.write(self.w, _frames.HEADER.pack(2 * self.BIG))
        with self.assertRaisesRegex(_frames.ProtocolError, "exceeds"):
            _frames.FrameReader(self.r, self.BIG).read_frame()


class TestBigRequests(RegistryIsolation):
    """Big requests go from the reader's reused buffer to the handler as their own bytes."""

    def request(self, req_id, payload, method="keep"):
        return harness.request(req_id, method, payload).SerializeToString()

    def test_decode_copies_the_payload_out_of_the_buffer(self):
        payload = os.urandom(_frames.BIG_FRAME)
        buf = bytearray(self.request(1, payload))
        kind, req = _wire.decode(memoryview(buf))
        buf[-len(payload):] = bytes(len(payload))  # the reader reuses its buffer
        self.assertEqual(kind, "request")
        self.assertIs(type(req.payload), bytes)
        self.assertEqual(req.payload, payload)
        self.assertEqual((req.id, req.method), (1, "keep"))

    def test_odd_big_frame_from_a_view_goes_to_protobuf(self):
        payload = os.urandom(_frames.BIG_FRAME)
        # Request.id twice: the hand parser steps aside, protobuf decodes it (last one wins).
        inner = b"\x08\x01\x08\x02\x12\x04keep\x1a" + _wire.varint(len(payload)) + payload
        buf = bytearray(b"\x12" + _wire.varint(len(inner)) + inner)
        kind, req = _wire.decode(memoryview(buf))
        buf[-len(payload):] = bytes(len(payload))
        self.assertEqual((kind, req.id, req.method), ("request", 2, "keep"))
        self.assertEqual(req.payload, payload)

    def test_handlers_keep_their_payloads(self):
        # A handler keeping its payload must never see it change when later frames reuse the
        # reader's buffer: big ones of the same size (same buffer), bigger, and small ones.
        kept = []
        pypool.handler("keep")(lambda p, c: kept.append(p))
        sent = []
        worker = _classic.Worker(pypool._registry, lambda head, tail=b"": sent.append(1), 64 << 20)
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        big = _frames.BIG_FRAME
        payloads = [os.urandom(size) for size in (big, big, 10, big, 3 * big, 0, big + 1)]
        data = b"".join(harness.frame(harness.request(i, "keep", p))
                        for i, p in enumerate(payloads, start=1))

        def write():
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
            os.close(w)

        writer = threading.Thread(target=write)
        writer.start()
        reader = _frames.FrameReader(r, 64 << 20)
        while True:
            body = reader.read_frame()
            if body is None:
                break
            worker.handle_frame(body)
        writer.join()
        self.assertEqual(len(sent), len(payloads))
        self.assertEqual([type(p) for p in kept], [bytes] * len(payloads))
        for i, (got, expected) in enumerate(zip(kept, payloads)):
            self.assertTrue(got == expected, "payload %d changed" % i)


class TestDispatch(RegistryIsolation):
    """Worker.handle_frame with a send() that records the frames it would write."""

    def setUp(self):
        super().setUp()
        self.sent = []
        self.worker = _classic.Worker(pypool._registry, self._capture, 1 << 20)

    def _capture(self, head, tail=b""):
        self.sent.append(bytes(head) + bytes(tail))

    def handle(self, envelope):
        self.worker.handle_frame(envelope.SerializeToString())

    def reply(self):
        self.assertEqual(len(self.sent), 1)
        env = pb.Envelope.FromString(self.sent.pop()[4:])
        return env

    def call(self, method, payload=b"", req_id=5, **kw):
        self.handle(harness.request(req_id, method, payload, **kw))
        env = self.reply()
        self.assertEqual(env.WhichOneof("msg"), "response")
        self.assertEqual(env.response.id, req_id)
        return env.response

    def test_echo(self):
        pypool.handler("echo")(lambda p, c: p)
        resp = self.call("echo", b"hi")
        self.assertEqual(resp.payload, b"hi")
        self.assertFalse(resp.HasField("error"))

    def test_return_types(self):
        pypool.handler("s")(lambda p, c: "h\u00e9")
        pypool.handler("n")(lambda p, c: None)
        pypool.handler("ba")(lambda p, c: bytearray(b"ba"))
        pypool.handler("mv")(lambda p, c: memoryview(array.array("i", [1, 2])))
        pypool.handler("bad")(lambda p, c: 3.5)
        self.assertEqual(self.call("s").payload, "h\u00e9".encode())
        self.assertEqual(self.call("n").payload, b"")
        self.assertEqual(self.call("ba").payload, b"ba")
        self.assertEqual(self.call("mv").payload, array.array("i", [1, 2]).tobytes())
        bad = self.call("bad")
        self.assertEqual(bad.error.type, "TypeError")
        self.assertIn("float", bad.error.message)

    def test_exception(self):
        def boom(payload, ctx):
            raise KeyError("nope")

        pypool.handler("boom")(boom)
        resp = self.call("boom")
        self.assertEqual(resp.error.type, "KeyError")
        self.assertEqual(resp.error.message, "'nope'")
        self.assertIn("in boom", resp.error.traceback)
        self.assertIn("KeyError: 'nope'", resp.error.traceback)
        self.assertNotIn("handle_request", resp.error.traceback)

    def test_base_exceptions_are_remote_errors(self):
        # Not only Exceptions: sys.exit(), KeyboardInterrupt and the like from a handler are
        # its errors, not the worker's end (serve() would otherwise let them out).
        class Abort(BaseException):
            pass

        for exc in (SystemExit(3), KeyboardInterrupt("k"), GeneratorExit(), Abort("a")):
            def raise_it(payload, ctx, exc=exc):
                raise exc

            pypool.handler(type(exc).__name__)(raise_it)
            resp = self.call(type(exc).__name__)
            self.assertEqual(resp.error.type, type(exc).__name__)
            self.assertIn("raise exc", resp.error.traceback)

    def test_no_such_method(self):
        resp = self.call("missing")
        self.assertEqual(resp.error.type, "NoSuchMethod")
        self.assertIn("missing", resp.error.message)

    def test_frame_too_large(self):
        pypool.handler("big")(lambda p, c: b"x" * (1 << 20))
        resp = self.call("big")
        self.assertEqual(resp.error.type, "FrameTooLarge")

    def test_reply_at_the_frame_limit(self):
        # 16 payload bytes + 6 bytes of Envelope/Response around them (id 5) = 22.
        pypool.handler("echo")(lambda p, c: p)
        for limit, fits in ((22, True), (21, False), (8, False)):
            self.worker = _classic.Worker(pypool._registry, self._capture, limit)
            resp = self.call("echo", b"p" * 16)
            if fits:
                self.assertEqual(resp.payload, b"p" * 16)
            else:
                self.assertEqual(resp.error.type, "FrameTooLarge")

    def test_error_fits_a_tiny_frame_limit(self):
        def loud(payload, ctx):
            raise RuntimeError("m" * 5000)

        pypool.handler("loud")(loud)
        self.worker = _classic.Worker(pypool._registry, self._capture, 1000)
        resp = self.call("loud")
        self.assertEqual(resp.error.type, "RuntimeError")
        self.assertEqual(resp.error.traceback, "")
        self.assertLess(len(resp.SerializeToString()), 1000)

    def test_context_fields(self):
        seen = {}

        def look(payload, ctx):
            seen.update(id=ctx.request_id, method=ctx.method, deadline=ctx.deadline_ms,
                        remaining=ctx.remaining(), sid=ctx.session_id, session=ctx.session)
            # The worker builds Contexts slot by slot: none may be left unset, except _call,
            # which is only ever read with a default (Context's comment says why).
            seen.update(slots={name: getattr(ctx, name) for name in pypool.Context.__slots__
                               if name != "_call"})
            seen.update(cancelled=ctx.cancelled())
            return b""

        pypool.handler("look")(look)
        self.call("look", req_id=9, deadline_ms=500)
        self.assertEqual((seen["id"], seen["method"], seen["deadline"]), (9, "look", 500))
        self.assertTrue(0.4 < seen["remaining"] <= 0.5)
        self.assertIsNone(seen["sid"])
        self.assertIsNone(seen["session"])
        self.call("look", req_id=10, session_id="s1")
        self.assertEqual((seen["sid"], seen["session"], seen["remaining"]), ("s1", {}, None))

    def test_sessions(self):
        def count(payload, ctx):
            ctx.session["n"] = ctx.session.get("n", 0) + 1
            return str(ctx.session["n"]).encode()

        pypool.handler("count")(count)
        self.assertEqual(self.call("count", session_id="a").payload, b"1")
        self.assertEqual(self.call("count", session_id="a").payload, b"2")
        self.assertEqual(self.call("count", session_id="b").payload, b"1")
        self.handle(pb.Envelope(session_close=pb.SessionClose(session_id="a")))
        self.assertEqual(self.sent, [])  # no reply to SessionClose
        self.assertEqual(self.call("count", session_id="a").payload, b"1")
        self.assertEqual(self.call("count", session_id="b").payload, b"2")

    def test_ping(self):
        self.handle(pb.Envelope(ping=pb.Ping(id=77)))
        env = self.reply()
        self.assertEqual(env.WhichOneof("msg"), "pong")
        self.assertEqual(env.pong.id, 77)

    def test_unexpected_message(self):
        with self.assertRaises(_frames.ProtocolError):
            self.handle(pb.Envelope(hello=pb.Hello(pid=1)))
        with self.assertRaises(_frames.ProtocolError):
            self.handle(pb.Envelope())


if __name__ == "__main__":
    unittest.main()
