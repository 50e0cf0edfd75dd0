from serving.protogen import grpc_service_pb2 as _grpc_service_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ModelExplainMethodsRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ModelExplainMethodsResponse(_message.Message):
    __slots__ = ("methods_json",)
    METHODS_JSON_FIELD_NUMBER: _ClassVar[int]
    methods_json: str
    def __init__(self, methods_json: _Optional[str] = ...) -> None: ...
