;; The smallest proxy-wasm filter Envoy runs: every callback returns "continue" at once, with no
;; SDK and no AssemblyScript runtime behind it. The benchmark (scripts/bench.ts, scenario
;; wasm-raw) compares it with reference-filter.ts compiled with the SDK (wasm-pass) to tell
;; Envoy's own cost of a Wasm filter from the SDK's per-stream bookkeeping.
(module
  (memory (export "memory") 2)
  (global $next (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  ;; Envoy copies data in only when the filter asks, which this one never does; should it ever,
  ;; the bump allocator starts over rather than running out (nothing here reads what it holds).
  (func (export "malloc") (param $size i32) (result i32)
    (local $at i32)
    (if (i32.gt_u (i32.add (global.get $next) (local.get $size)) (i32.const 131072))
      (then (global.set $next (i32.const 1024))))
    (local.set $at (global.get $next))
    (global.set $next (i32.add (global.get $next) (local.get $size)))
    (local.get $at))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))
