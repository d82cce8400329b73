"""A Protobuf message class for the schema tests, as protoc's generated module would give it.

Built from its descriptor in code (the file protoc would compile from):

    syntax = "proto3";
    package kw.test;
    message Renewal { string user_id = 1; int64 amount = 2; }
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FILE = descriptor_pb2.FileDescriptorProto(name="kw_test_renewal.proto", package="kw.test", syntax="proto3")
_MESSAGE = _FILE.message_type.add(name="Renewal")
_MESSAGE.field.add(name="user_id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                   label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL, json_name="userId")
_MESSAGE.field.add(name="amount", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                   label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL, json_name="amount")

_POOL = descriptor_pool.Default()
try:
    DESCRIPTOR = _POOL.FindFileByName(_FILE.name)
except KeyError:
    _POOL.Add(_FILE)
    DESCRIPTOR = _POOL.FindFileByName(_FILE.name)
Renewal = message_factory.GetMessageClass(DESCRIPTOR.message_types_by_name["Renewal"])
