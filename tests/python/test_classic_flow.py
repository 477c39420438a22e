"""End-to-end tests of streams, async handlers, host calls and Cancel in classic mode
(max_inflight 1): a real worker subprocess driven over fds 3/4 as the C pool drives it."""

import os
import signal
import tempfile
import unittest

import harness
from harness import Worker, cancel, pb, request

CANCELLED = "Cancelled"


class FlowTestCase(unittest.TestCase):
    """A worker of tests/python/modules/rt_flow.py; extra_env picks the mode."""

    extra_env = {}

    def started(self, **kw):
        worker = Worker("rt_flow", extra_env=dict(self.extra_env), **kw)
        self.addCleanup(worker.close)
        worker.hello()
        return worker

    def gate_paths(self):
        tmp = tempfile.mkdtemp(prefix="pypool-flow-")
        self.addCleanup(_remove_tree, tmp)
        return os.path.join(tmp, "started"), os.path.join(tmp, "gate")


def _remove_tree(path):
    for name in os.listdir(path):
        os.unlink(os.path.join(path, name))
    os.rmdir(path)


class TestStreams(FlowTestCase):
    def test_ten_thousand_chunks_in_order(self):
        chunks, final = self.started().stream("gen_count", b"10000")
        self.assertEqual(chunks, [b"%d" % i for i in range(10000)])
        self.assertTrue(final.stream_end)
        self.assertFalse(final.more)
        self.assertFalse(final.HasField("error"))
        self.assertEqual(final.payload, b"")

    def test_async_generator(self):
        chunks, final = self.started().stream("agen_count", b"50")
        self.assertEqual(chunks, [b"%d" % i for i in range(50)])
        self.assertTrue(final.stream_end)

    def test_empty_stream(self):
        chunks, final = self.started().stream("gen_count", b"0")
        self.assertEqual(chunks, [])
        self.assertTrue(final.stream_end)

    def test_error_mid_stream(self):
        worker = self.started()
        chunks, final = worker.stream("gen_fail", b"3")
        self.assertEqual(chunks, [b"0", b"1", b"2"])
        self.assertFalse(final.stream_end)
        self.assertEqual(final.error.type, "ValueError")
        self.assertEqual(final.error.message, "boom after 3")
        self.assertIn("in gen_fail", final.error.traceback)
        self.assertEqual(worker.call("echo", b"next", req_id=2).payload, b"next")

    def test_chunk_types(self):
        chunks, final = self.started().stream("gen_types")
        self.assertEqual(chunks, [b"str", b"", b"ba", b"mv"])
        self.assertEqual(final.error.type, "TypeError")
        self.assertIn("yielded int", final.error.message)

    def test_plain_handler_as_a_stream_is_one_plain_response(self):
        chunks, final = self.started().stream("echo", b"one")
        self.assertEqual(chunks, [])
        self.assertFalse(final.stream_end)
        self.assertEqual(final.payload, b"one")

    def check_cancel_after_three_chunks(self, method):
        worker = self.started()
        pid = worker.proc.pid

        def on_chunk(req_id, n):
            if n == 3:
                worker.send(cancel(req_id))

        result = worker.collect([7], on_chunk=on_chunk) if worker.send(
            request(7, method)) is None else None
        chunks, final = result[7]
        self.assertGreaterEqual(len(chunks), 3)
        self.assertEqual(chunks, [b"%d" % i for i in range(len(chunks))])
        self.assertEqual(final.error.type, CANCELLED)
        self.assertFalse(final.stream_end)
        # The worker lives on, serves the next call, and closed the generator (finally ran).
        self.assertIn(method, worker.call("closed", req_id=8).payload.decode().split(","))
        self.assertEqual(worker.call("pid", req_id=9).payload, str(pid).encode())
        return worker

    def test_cancel_endless_generator(self):
        self.check_cancel_after_three_chunks("gen_endless")

    def test_cancel_endless_async_generator(self):
        self.check_cancel_after_three_chunks("agen_endless")

    def test_cancel_endless_threaded_generator(self):
        self.check_cancel_after_three_chunks("tgen_endless")

    def test_cancel_of_a_finished_call_is_ignored(self):
        worker = self.started()
        self.assertEqual(worker.call("echo", b"a", req_id=1).payload, b"a")
        worker.send(cancel(1))
        worker.send(cancel(12345))
        self.assertEqual(worker.call("echo", b"b", req_id=2).payload, b"b")


class TestAsyncAndThreaded(FlowTestCase):
    def test_async_handler(self):
        worker = self.started()
        self.assertEqual(worker.call("aecho", b"hi").payload, b"hi")
        self.assertEqual(worker.call("asleep", b"0.01", req_id=2).payload, b"slept")

    def test_async_handlers_share_one_loop(self):
        worker = self.started()
        self.assertEqual(worker.call("loop_id", req_id=1).payload, b"1")
        self.assertEqual(worker.call("loop_id", req_id=2).payload, b"1")

    def test_async_error_traceback_starts_at_the_handler(self):
        resp = self.started().call("afail")
        self.assertEqual(resp.error.type, "ValueError")
        self.assertEqual(resp.error.message, "async boom")
        self.assertIn("in afail", resp.error.traceback)
        self.assertNotIn("asyncio", resp.error.traceback)
        self.assertNotIn("pypool", resp.error.traceback)

    def test_threaded_handler_runs(self):
        self.assertFalse(self.started().call("tsleep", b"0").HasField("error"))


class TestHostCalls(FlowTestCase):
    def check_host(self, method):
        worker = self.started()
        (chunks, final), = worker.stream(method, b"abc", req_id=3),
        self.assertEqual(final.payload, b"ok:ABC", final)
        self.assertEqual(len(worker.host_calls), 1)
        call = worker.host_calls[0]
        self.assertEqual((call.call_id, call.name, call.payload), (3, "upper", b"abc"))
        self.assertNotEqual(call.id, 0)
        return worker

    def test_plain(self):
        self.check_host("host_plain")

    def test_threaded(self):
        self.check_host("host_threaded")

    def test_async(self):
        self.check_host("host_async")

    def test_host_ids_are_unique(self):
        worker = self.check_host("host_plain")
        worker.stream("host_async", b"x", req_id=4)
        worker.stream("host_threaded", b"y", req_id=5)
        ids = [c.id for c in worker.host_calls]
        self.assertEqual(len(set(ids)), len(ids))

    def test_host_error(self):
        worker = self.started()
        _, final = worker.stream("host_raise", b"x")
        self.assertEqual(final.error.type, "HostError")
        self.assertIn("failed on purpose", final.error.message)
        self.assertIn("7", final.error.message)
        self.assertIn("in host_raise", final.error.traceback)

    def test_host_error_code(self):
        worker = self.started()
        worker.send(request(1, "host_plain", b"x"))
        env = worker.recv()
        self.assertEqual(env.WhichOneof("msg"), "host_call")
        worker.send(pb.Envelope(host_reply=pb.HostReply(id=env.host_call.id, call_id=1,
                                                         error=-3, message="cancelled")))
        self.assertEqual(worker.recv().response.payload, b"HostError:-3:cancelled")

    def test_host_calls_inside_a_stream(self):
        chunks, final = self.started().stream("host_gen", b"3")
        self.assertEqual(chunks, [b"CHUNK0", b"CHUNK1", b"CHUNK2"])
        self.assertTrue(final.stream_end)

    def test_cancel_while_waiting_for_the_host(self):
        # A Cancel read while ctx.host() waits marks the call; the handler gets its reply.
        worker = self.started()
        worker.send(request(4, "host_twice_cancel", b"q"))
        env = worker.recv()
        self.assertEqual(env.WhichOneof("msg"), "host_call")
        worker.send(cancel(4))
        worker.send(pb.Envelope(ping=pb.Ping(id=77)))  # answered while the handler waits
        self.assertEqual(worker.recv().pong.id, 77)
        worker.send(worker.host_reply(env.host_call))
        self.assertEqual(worker.recv().response.payload, b"Q:cancelled")

    def test_stale_host_reply_is_ignored(self):
        worker = self.started()
        worker.send(pb.Envelope(host_reply=pb.HostReply(id=999, call_id=1, payload=b"late")))
        self.assertEqual(worker.call("echo", b"e").payload, b"e")

    def test_sigterm_while_waiting_for_the_host_answers_first(self):
        worker = self.started()
        worker.send(request(6, "host_plain", b"t"))
        env = worker.recv()
        self.assertEqual(env.WhichOneof("msg"), "host_call")
        worker.proc.send_signal(signal.SIGTERM)
        worker.send(worker.host_reply(env.host_call))
        self.assertEqual(worker.recv().response.payload, b"ok:T")
        self.assertEqual(worker.wait(), 0)

    def test_a_request_during_a_call_is_a_protocol_error(self):
        worker = self.started()
        worker.send(request(1, "host_plain", b"x"))
        self.assertEqual(worker.recv().WhichOneof("msg"), "host_call")
        worker.send(request(2, "echo", b"y"))
        self.assertEqual(worker.wait(), 3)
        self.assertIn("max_inflight is 1", worker.stderr)


if __name__ == "__main__":
    unittest.main()
