"""An OTLP profiles receiver for the daemon's consumer test.

Serves opentelemetry.proto.collector.profiles.v1development.ProfilesService
over gRPC with the official classes from PyPI's opentelemetry-proto (the
request bytes are parsed by ExportProfilesServiceRequest.FromString), and
writes one JSON line per request to --out: each process's resource
attributes and, per profile, its sample type and its samples as function
names per location (leaf first, inlined frames innermost first), thread and
values. The Rust test reads that file; it never decodes the bytes itself.

usage: receiver.py --port PORT --out FILE
"""
import argparse
import json
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.profiles.v1development import (
    profiles_service_pb2 as service_pb2,
    profiles_service_pb2_grpc as service_grpc,
)


def any_value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def summary(request):
    d = request.dictionary
    s = d.string_table

    def names(location_index):
        loc = d.location_table[location_index]
        return [s[d.function_table[line.function_index].name_strindex] for line in loc.lines]

    def mapping_file(location_index):
        loc = d.location_table[location_index]
        return s[d.mapping_table[loc.mapping_index].filename_strindex] if loc.mapping_index else ""

    resources = []
    for rp in request.resource_profiles:
        attributes = {kv.key: any_value(kv.value) for kv in rp.resource.attributes}
        profiles = []
        for sp in rp.scope_profiles:
            for p in sp.profiles:
                samples = []
                for x in p.samples:
                    stack = d.stack_table[x.stack_index]
                    attrs = {}
                    for i in x.attribute_indices:
                        kv = d.attribute_table[i]
                        attrs[s[kv.key_strindex]] = any_value(kv.value)
                    samples.append({
                        "frames": [names(i) for i in stack.location_indices],
                        "files": [mapping_file(i) for i in stack.location_indices],
                        "values": list(x.values),
                        "thread": attrs.get("thread.name"),
                    })
                profiles.append({
                    "scope": sp.scope.name,
                    "sample_type": [s[p.sample_type.type_strindex], s[p.sample_type.unit_strindex]],
                    "period_type": [s[p.period_type.type_strindex], s[p.period_type.unit_strindex]],
                    "period": p.period,
                    "time_unix_nano": p.time_unix_nano,
                    "duration_nano": p.duration_nano,
                    "samples": samples,
                })
        resources.append({"attributes": attributes, "profiles": profiles})
    return {
        "bytes": request.ByteSize(),
        "zero_values_first": [
            d.string_table[0] == "",
            d.mapping_table[0].ByteSize() == 0,
            d.location_table[0].ByteSize() == 0,
            d.function_table[0].ByteSize() == 0,
            d.stack_table[0].ByteSize() == 0,
            d.attribute_table[0].ByteSize() == 0,
        ],
        "resources": resources,
    }


class Receiver(service_grpc.ProfilesServiceServicer):
    def __init__(self, out):
        self.out = out

    def Export(self, request, context):
        with open(self.out, "a") as f:
            f.write(json.dumps(summary(request)) + "\n")
        return service_pb2.ExportProfilesServiceResponse()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service_grpc.add_ProfilesServiceServicer_to_server(Receiver(args.out), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
