// The proxy-wasm ABI 0.2.1 host functions llm-mesh calls, declared as Envoy exports them. Only
// assembly/host/calls.ts calls these: it turns their status codes into results instead of traps.
// A declaration nothing calls does not reach the module's imports, so this list may hold more than
// a given filter uses; a function Envoy does not offer (such as the 0.1.0 proxy_clear_route_cache)
// must never be called, or the module fails to load with "missing import".
//
// Every function returns a WasmResult; pointers and sizes are 32-bit. Where the host hands data
// back, it calls the module's malloc for the bytes and writes their address and size into the two
// out-parameters (see takeReturned in callback-cache.ts).

// @ts-ignore: decorator
@external("env", "proxy_log")
export declare function proxy_log(level: u32, message: usize, messageSize: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_log_level")
export declare function proxy_get_log_level(levelOut: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_buffer_bytes")
export declare function proxy_get_buffer_bytes(buffer: u32, start: u32, length: u32, dataOut: usize, sizeOut: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_set_buffer_bytes")
export declare function proxy_set_buffer_bytes(buffer: u32, start: u32, length: u32, data: usize, size: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_header_map_value")
export declare function proxy_get_header_map_value(map: u32, key: usize, keySize: usize, valueOut: usize, sizeOut: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_header_map_pairs")
export declare function proxy_get_header_map_pairs(map: u32, dataOut: usize, sizeOut: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_set_header_map_pairs")
export declare function proxy_set_header_map_pairs(map: u32, data: usize, size: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_header_map_size")
export declare function proxy_get_header_map_size(map: u32, sizeOut: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_replace_header_map_value")
export declare function proxy_replace_header_map_value(map: u32, key: usize, keySize: usize, value: usize, valueSize: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_remove_header_map_value")
export declare function proxy_remove_header_map_value(map: u32, key: usize, keySize: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_send_local_response")
export declare function proxy_send_local_response(status: u32, details: usize, detailsSize: usize, body: usize, bodySize: usize,
  headerPairs: usize, headerPairsSize: usize, grpcStatus: i32): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_property")
export declare function proxy_get_property(path: usize, pathSize: usize, valueOut: usize, sizeOut: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_set_property")
export declare function proxy_set_property(path: usize, pathSize: usize, value: usize, valueSize: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_current_time_nanoseconds")
export declare function proxy_get_current_time_nanoseconds(nanosOut: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_continue_stream")
export declare function proxy_continue_stream(stream: u32): u32;

// @ts-ignore: decorator
@external("env", "proxy_set_effective_context")
export declare function proxy_set_effective_context(contextId: u32): u32;

// @ts-ignore: decorator
@external("env", "proxy_set_tick_period_milliseconds")
export declare function proxy_set_tick_period_milliseconds(milliseconds: u32): u32;

// @ts-ignore: decorator
@external("env", "proxy_get_shared_data")
export declare function proxy_get_shared_data(key: usize, keySize: usize, valueOut: usize, sizeOut: usize, casOut: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_set_shared_data")
export declare function proxy_set_shared_data(key: usize, keySize: usize, value: usize, valueSize: usize, cas: u32): u32;

// @ts-ignore: decorator
@external("env", "proxy_define_metric")
export declare function proxy_define_metric(kind: u32, name: usize, nameSize: usize, idOut: usize): u32;

// @ts-ignore: decorator
@external("env", "proxy_increment_metric")
export declare function proxy_increment_metric(id: u32, delta: i64): u32;

// @ts-ignore: decorator
@external("env", "proxy_record_metric")
export declare function proxy_record_metric(id: u32, value: u64): u32;

// `service` is either a serialized envoy.config.core.v3.GrpcService or a bare cluster name; the
// token Envoy writes out names the call in the proxy_on_grpc_* callbacks.
// @ts-ignore: decorator
@external("env", "proxy_grpc_call")
export declare function proxy_grpc_call(service: usize, serviceSize: usize, serviceName: usize, serviceNameSize: usize,
  method: usize, methodSize: usize, initialMetadata: usize, initialMetadataSize: usize, message: usize, messageSize: usize,
  timeoutMilliseconds: u32, tokenOut: usize): u32;

// The status of the gRPC call being closed (proxy_on_grpc_close): code, and a message the host allocates.
// @ts-ignore: decorator
@external("env", "proxy_get_status")
export declare function proxy_get_status(codeOut: usize, messageOut: usize, messageSizeOut: usize): u32;
