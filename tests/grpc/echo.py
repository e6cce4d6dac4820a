"""A real gRPC server and client (grpcio) for Tollgate's GRPCRoute end-to-end tests.

No protobuf: messages are raw bytes (identity serializers), which gRPC carries like any
other message. Run by tests/tests/l7_grpc.rs with the venv `cargo xtask setup` makes.

    echo.py server PORT NAME
        Serves every method. Unary calls answer "NAME|/full/Method|x-added|x-version|REQUEST"
        (the metadata values as received, "-" when absent). Stream calls (/test.Echo/Chat,
        bidirectional) answer each message with "NAME|MESSAGE" as soon as it arrives. Every
        call sends initial metadata x-backend: NAME and x-secret: s.
    echo.py client TARGET CALLS_JSON
        Makes the calls (a JSON list of {"method", "metadata": [[k, v]], "request"} for
        unary calls, or {"method", "stream": [messages]} for a bidirectional stream whose next
        message is sent only once the answer to the previous one came back; "authority" in
        either sends that :authority instead of TARGET), and prints one JSON object per call:
        {"code", "details", "response" | "responses", "initial"}. Calls with the same
        authority share one channel (one HTTP/2 connection).
"""
import json
import queue
import sys
import threading
from concurrent import futures

import grpc


def identity(b):
    return b


def serve(port, name):
    def unary(method, request, context):
        context.send_initial_metadata((("x-backend", name), ("x-secret", "s")))
        md = dict(context.invocation_metadata())
        parts = [name, method, md.get("x-added", "-"), md.get("x-version", "-"),
                 request.decode()]
        return "|".join(parts).encode()

    def chat(requests, context):
        context.send_initial_metadata((("x-backend", name), ("x-secret", "s")))
        for r in requests:
            yield ("%s|%s" % (name, r.decode())).encode()

    class Any(grpc.GenericRpcHandler):
        def service(self, details):
            if details.method.endswith("/Chat"):
                return grpc.stream_stream_rpc_method_handler(chat, identity, identity)
            method = details.method

            def handler(request, context):
                return unary(method, request, context)

            return grpc.unary_unary_rpc_method_handler(handler, identity, identity)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((Any(),))
    server.add_insecure_port("127.0.0.1:%d" % port)
    server.start()
    print("serving", flush=True)
    server.wait_for_termination()


def result(code, details, initial, **kw):
    out = {"code": code.name if code else "OK", "details": details or "",
           "initial": {k: v for k, v in (initial or ())}}
    out.update(kw)
    return out


def client(target, calls):
    channels = {}

    def channel_for(authority):
        if authority not in channels:
            options = [("grpc.default_authority", authority)] if authority else []
            channels[authority] = grpc.insecure_channel(target, options=options)
        return channels[authority]

    for call in calls:
        channel = channel_for(call.get("authority"))
        if "stream" in call:
            stub = channel.stream_stream(call["method"], request_serializer=identity,
                                         response_deserializer=identity)
            answered = queue.Queue()

            def requests(messages=call["stream"]):
                for i, m in enumerate(messages):
                    if i > 0:
                        # The next message only once the previous one's answer is back: a
                        # proxy that buffered the request would never get it.
                        answered.get(timeout=10)
                    yield m.encode()

            responses = []
            it = stub(requests(), timeout=20)
            try:
                for r in it:
                    responses.append(r.decode())
                    answered.put(True)
                print(json.dumps(result(it.code(), it.details(), it.initial_metadata(),
                                        responses=responses)), flush=True)
            except grpc.RpcError as e:
                print(json.dumps(result(e.code(), e.details(), None, responses=responses)),
                      flush=True)
        else:
            stub = channel.unary_unary(call["method"], request_serializer=identity,
                                       response_deserializer=identity)
            md = tuple(tuple(kv) for kv in call.get("metadata", []))
            try:
                response, c = stub.with_call(call.get("request", "").encode(), metadata=md,
                                             timeout=10)
                print(json.dumps(result(c.code(), c.details(), c.initial_metadata(),
                                        response=response.decode())), flush=True)
            except grpc.RpcError as e:
                print(json.dumps(result(e.code(), e.details(), e.initial_metadata())),
                      flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        client(sys.argv[2], json.loads(sys.argv[3]))
