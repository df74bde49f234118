;; echoreactor is echo.wat as a Nebula reactor: nebula_handle copies stdin
;; to stdout through a 4 KiB buffer until end of file and returns 0; a
;; failed read or write returns 1. The same work as echo.wat, so that the
;; two paths (a command instantiated per event, a reactor restored from its
;; snapshot per event) compare on identical behaviour.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; Layout: iovec at 0 {buf, len}; count at 8; buffer at 16.
  (func (export "nebula_handle") (result i32)
    (local $n i32)
    (loop $copy
      (i32.store (i32.const 0) (i32.const 16))
      (i32.store (i32.const 4) (i32.const 4096))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (return (i32.const 1))))
      (local.set $n (i32.load (i32.const 8)))
      (if (i32.eqz (local.get $n)) (then (return (i32.const 0))))
      ;; Write the n bytes read; loop on short writes.
      (i32.store (i32.const 4) (local.get $n))
      (block $done
        (loop $write
          (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
            (then (return (i32.const 1))))
          (local.set $n (i32.sub (local.get $n) (i32.load (i32.const 8))))
          (br_if $done (i32.eqz (local.get $n)))
          (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.load (i32.const 8))))
          (i32.store (i32.const 4) (local.get $n))
          (br $write)))
      (br $copy))
    (i32.const 0)))
