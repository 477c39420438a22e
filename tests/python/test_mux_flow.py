"""End-to-end tests of a worker holding several calls at once (PYPOOL_MAX_INFLIGHT > 1):
concurrency of async and threaded handlers, Cancel, sessions, host calls, replies out of
order, Ping, SIGTERM and EOF. The classic-mode flow tests run again here in this mode too.

Timing checks are ratios against the serial time with wide margins; everything else waits
for events (a file a handler creates, a frame), never for a guessed duration.
"""

import os
import signal
import time
import unittest

import harness
import test_classic_flow as classic
from harness import cancel, pb, request

MUX = {"PYPOOL_MAX_INFLIGHT": "8"}


class MuxStreams(classic.TestStreams):
    extra_env = MUX


class MuxAsyncAndThreaded(classic.TestAsyncAndThreaded):
    extra_env = MUX


class MuxHostCalls(classic.TestHostCalls):
    extra_env = MUX

    def test_a_request_during_a_call_is_a_protocol_error(self):
        # Not in this mode: a request that comes while a plain handler waits for the host
        # queues behind it if plain, runs at once if async.
        worker = self.started()
        worker.send(request(1, "host_plain", b"x"))
        env = worker.recv()
        self.assertEqual(env.WhichOneof("msg"), "host_call")
        worker.send(request(2, "echo", b"queued"))
        worker.send(request(3, "aecho", b"async"))
        self.assertEqual(worker.recv().response.payload, b"async")
        worker.send(worker.host_reply(env.host_call))
        self.assertEqual([worker.recv().response.payload for _ in range(2)],
                         [b"ok:X", b"queued"])

    def test_many_host_calls_outstanding_answered_in_reverse(self):
        worker = self.started()
        methods = ["host_threaded", "host_async"] * 3
        for i, method in enumerate(methods, start=1):
            worker.send(request(i, method, b"p%d" % i))
        calls = []
        while len(calls) < len(methods):
            env = worker.recv()
            self.assertEqual(env.WhichOneof("msg"), "host_call", env)
            calls.append(env.host_call)
        for call in reversed(calls):
            worker.send(worker.host_reply(call))
        got = worker.collect(range(1, len(methods) + 1))
        for i in range(1, len(methods) + 1):
            self.assertEqual(got[i][1].payload, b"ok:P%d" % i)
        self.assertEqual(sorted(c.call_id for c in calls), list(range(1, len(methods) + 1)))


class TestConcurrency(classic.FlowTestCase):
    extra_env = MUX

    def timed(self, worker, method, payload, count):
        start = time.monotonic()
        for i in range(1, count + 1):
            worker.send(request(i, method, payload))
        got = worker.collect(range(1, count + 1))
        for i in range(1, count + 1):
            self.assertFalse(got[i][1].HasField("error"), got[i][1].error)
        return time.monotonic() - start

    def test_async_handlers_run_together(self):
        worker = self.started()
        elapsed = self.timed(worker, "asleep", b"0.2", 8)
        self.assertLess(elapsed, 8 * 0.2 / 2, "8 async sleeps of 0.2 s took %.2f s" % elapsed)

    def test_threaded_handlers_run_together(self):
        worker = self.started()
        elapsed = self.timed(worker, "tsleep", b"0.2", 4)
        self.assertLess(elapsed, 4 * 0.2 / 2, "4 threaded sleeps of 0.2 s took %.2f s" % elapsed)

    def test_replies_out_of_order(self):
        worker = self.started()
        started, _ = self.gate_paths()
        worker.send(request(1, "await_cancel", started.encode()))
        harness.wait_for_file(started)
        worker.send(request(2, "echo", b"second"))
        env = worker.recv()
        self.assertEqual((env.response.id, env.response.payload), (2, b"second"))
        worker.send(cancel(1))
        self.assertEqual(worker.recv().response.error.type, classic.CANCELLED)

    def test_pipelined_plain_calls_in_order(self):
        worker = self.started()
        worker.send_raw(b"".join(harness.frame(request(i, "echo", b"%d" % i))
                                 for i in range(1, 1001)))
        for i in range(1, 1001):
            env = worker.recv()
            self.assertEqual((env.response.id, env.response.payload), (i, b"%d" % i))

    def test_big_and_small_payloads(self):
        worker = self.started()
        for req_id, size in enumerate((3 << 20, 10, (1 << 18) + 5, 0, 1 << 20), start=1):
            payload = os.urandom(size)
            self.assertTrue(worker.call("echo", payload, req_id=req_id).payload == payload)

    def test_ping_while_async_calls_run(self):
        worker = self.started()
        paths = []
        for i in range(1, 5):
            path = self.gate_paths()[0]
            paths.append(path)
            worker.send(request(i, "await_cancel", path.encode()))
        for path in paths:
            harness.wait_for_file(path)
        worker.send(pb.Envelope(ping=pb.Ping(id=42)))
        self.assertEqual(worker.recv().pong.id, 42)
        for i in range(1, 5):
            worker.send(cancel(i))
        got = worker.collect(range(1, 5))
        self.assertEqual({r.error.type for _, r in got.values()}, {classic.CANCELLED})

    def test_a_blocking_plain_handler_stops_reading_not_running_calls(self):
        # Documented: a plain handler runs on the reading thread; while it blocks, Ping waits,
        # but calls already running (here an async one) still finish and reply.
        worker = self.started()
        started, gate = self.gate_paths()
        worker.send(request(1, "asleep", b"0.05"))
        worker.send(request(2, "gate", ("%s|%s" % (started, gate)).encode()))
        harness.wait_for_file(started)
        self.assertEqual(worker.recv().response.id, 1)
        worker.send(pb.Envelope(ping=pb.Ping(id=9)))
        with self.assertRaises(TimeoutError):
            worker.recv(timeout=0.3)
        open(gate, "w").close()
        env = worker.recv()
        self.assertEqual((env.response.id, env.response.payload), (2, b"opened"))
        self.assertEqual(worker.recv().pong.id, 9)


class TestCancel(classic.FlowTestCase):
    extra_env = MUX

    def test_cancel_async_task(self):
        worker = self.started()
        pid = worker.proc.pid
        started, _ = self.gate_paths()
        worker.send(request(5, "await_cancel", started.encode()))
        harness.wait_for_file(started)
        worker.send(cancel(5))
        resp = worker.recv().response
        self.assertEqual((resp.id, resp.error.type), (5, classic.CANCELLED))
        self.assertEqual(worker.call("pid", req_id=6).payload, str(pid).encode())
        self.assertEqual(worker.call("aecho", b"next", req_id=7).payload, b"next")

    def test_cancel_right_after_the_request(self):
        # Cancel in the same read as its Request, for every kind: whether the call started or
        # not, exactly one final Response comes, and the worker serves on.
        worker = self.started()
        methods = ["asleep", "tsleep", "echo", "gen_endless", "agen_endless", "acount"]
        data = b""
        for i, method in enumerate(methods, start=1):
            payload = b"0.01" if method == "tsleep" else b"5"  # a started thread runs on
            data += harness.frame(request(i, method, payload, session_id="c" if i == 6 else ""))
            data += harness.frame(cancel(i))
        worker.send_raw(data)
        got = worker.collect(range(1, len(methods) + 1))
        for i, method in enumerate(methods, start=1):
            final = got[i][1]
            if final.HasField("error"):
                self.assertEqual(final.error.type, classic.CANCELLED, method)
        self.assertEqual(worker.call("echo", b"after", req_id=99).payload, b"after")

    def test_cancel_threaded_handler_sees_cancelled(self):
        worker = self.started()
        started, _ = self.gate_paths()
        worker.send(request(5, "twait_cancel", started.encode()))
        harness.wait_for_file(started)
        worker.send(cancel(5))
        resp = worker.recv().response
        self.assertEqual((resp.id, resp.payload), (5, b"saw cancel"))

    def test_cancel_a_call_queued_in_its_session(self):
        worker = self.started()
        started, _ = self.gate_paths()
        worker.send(request(1, "await_cancel", started.encode(), session_id="s"))
        harness.wait_for_file(started)
        worker.send(request(2, "echo", b"queued", session_id="s"))
        worker.send(cancel(2))
        resp = worker.recv().response
        self.assertEqual((resp.id, resp.error.type), (2, classic.CANCELLED))
        worker.send(cancel(1))
        self.assertEqual(worker.recv().response.id, 1)
        self.assertEqual(worker.call("echo", b"s again", req_id=3, session_id="s").payload,
                         b"s again")

    def test_cancel_a_plain_call_queued_behind_a_plain_one(self):
        worker = self.started()
        started, gate = self.gate_paths()
        worker.send(request(1, "host_plain", b"h"))  # waits for its host reply
        env = worker.recv()
        self.assertEqual(env.WhichOneof("msg"), "host_call")
        worker.send(request(2, "echo", b"queued"))
        worker.send(cancel(2))
        resp = worker.recv().response
        self.assertEqual((resp.id, resp.error.type), (2, classic.CANCELLED))
        worker.send(worker.host_reply(env.host_call))
        self.assertEqual(worker.recv().response.payload, b"ok:H")


class TestSessions(classic.FlowTestCase):
    extra_env = MUX

    def test_calls_of_one_session_never_overlap(self):
        worker = self.started()
        for i in range(1, 17):
            worker.send(request(i, "acount", session_id="one"))
        got = worker.collect(range(1, 17))
        # In arrival order, each seeing the one before: 1..16.
        self.assertEqual([got[i][1].payload for i in range(1, 17)],
                         [b"%d" % i for i in range(1, 17)])

    def test_sessions_run_concurrently(self):
        worker = self.started()
        started, _ = self.gate_paths()
        worker.send(request(1, "await_cancel", started.encode(), session_id="a"))
        harness.wait_for_file(started)
        self.assertEqual(worker.call("acount", req_id=2, session_id="b").payload, b"1")
        worker.send(cancel(1))
        self.assertEqual(worker.recv().response.id, 1)


class TestExits(classic.FlowTestCase):
    extra_env = MUX

    def test_sigterm_idle_exits(self):
        worker = self.started()
        self.assertEqual(worker.call("aecho", b"x").payload, b"x")
        worker.proc.send_signal(signal.SIGTERM)
        self.assertEqual(worker.wait(), 0)

    def test_sigterm_with_calls_in_flight_answers_them_first(self):
        worker = self.started()
        started, gate = self.gate_paths()
        worker.send(request(1, "gate", ("%s|%s" % (started, gate)).encode()))
        worker.send(request(2, "asleep", b"0.05"))
        harness.wait_for_file(started)
        worker.proc.send_signal(signal.SIGTERM)
        open(gate, "w").close()
        got = worker.collect([1, 2])
        self.assertEqual((got[1][1].payload, got[2][1].payload), (b"opened", b"slept"))
        self.assertEqual(worker.wait(), 0)

    def test_eof_exits_at_once(self):
        worker = self.started()
        started, _ = self.gate_paths()
        worker.send(request(1, "await_cancel", started.encode()))
        harness.wait_for_file(started)
        worker.close_requests()
        self.assertEqual(worker.wait(), 0)

    def test_shutdown(self):
        worker = self.started()
        worker.send(pb.Envelope(shutdown=pb.Shutdown()))
        self.assertEqual(worker.wait(), 0)

    def test_bad_max_inflight(self):
        for value in ("0", "-2", "many"):
            worker = harness.Worker("rt_flow", extra_env={"PYPOOL_MAX_INFLIGHT": value})
            self.addCleanup(worker.close)
            self.assertEqual(worker.wait(), 1)
            self.assertIn("PYPOOL_MAX_INFLIGHT", worker.stderr)

    def test_undecodable_exits_3(self):
        worker = self.started()
        worker.send_raw(b"\x00\x00\x00\x12hello-not-protobuf")
        self.assertEqual(worker.wait(), 3)
        self.assertIn("undecodable", worker.stderr)


if __name__ == "__main__":
    unittest.main()
