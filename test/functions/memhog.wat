;; memhog tries to exhaust a resource, chosen by the first byte of stdin:
;;
;;   m  grow linear memory a page at a time, filling every new page, until
;;      memory.grow fails, then trap (unreachable)
;;   t  grow its table 4096 elements at a time until table.grow fails, then
;;      trap; the table declares no maximum
;;   o  write 64 KiB blocks to stdout until a write fails, then exit 1
;;   f  open its own file, /memhog.wasm (where nebula build puts it), again
;;      and again until an open fails, then hold what it opened: spin until
;;      the deadline
;;   anything else (or nothing): print "ok" and exit 0
;;
;; The end-to-end memory tests send these as events to one task.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (table $t 0 funcref)
  ;; Layout: iovec at 0 {buf, len}; count at 8; "ok\n" at 12; input at 16;
  ;; "memhog.wasm" at 20; an opened descriptor at 32; page 1 (64 KiB at
  ;; 65536) is the output block.
  (data (i32.const 12) "ok\n")
  (data (i32.const 20) "memhog.wasm")
  (func (export "_start")
    (local $page i32)
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 1))
    (i32.store8 (i32.const 16) (i32.const 0))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (block $other
      (block $files
      (block $out
        (block $table
          (block $mem
            (br_if $mem (i32.eq (i32.load8_u (i32.const 16)) (i32.const 109)))   ;; m
            (br_if $table (i32.eq (i32.load8_u (i32.const 16)) (i32.const 116))) ;; t
            (br_if $out (i32.eq (i32.load8_u (i32.const 16)) (i32.const 111)))   ;; o
            (br_if $files (i32.eq (i32.load8_u (i32.const 16)) (i32.const 102))) ;; f
            (br $other))
          ;; m: grow and fill until refused.
          (loop $grow
            (local.set $page (memory.grow (i32.const 1)))
            (if (i32.eq (local.get $page) (i32.const -1)) (then unreachable))
            (memory.fill (i32.mul (local.get $page) (i32.const 65536)) (i32.const 1) (i32.const 65536))
            (br $grow)))
        ;; t: grow the table until refused.
        (loop $grow
          (if (i32.eq (table.grow $t (ref.null func) (i32.const 4096)) (i32.const -1))
            (then unreachable))
          (br $grow)))
      ;; o: flood stdout with page 1.
      (i32.store (i32.const 0) (i32.const 65536))
      (i32.store (i32.const 4) (i32.const 65536))
      (loop $write
        (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
          (then (call $proc_exit (i32.const 1))))
        (br $write)))
      ;; f: open memhog.wasm (fd 3 is the root) until refused, then hold.
      (loop $open
        (br_if $open (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 20) (i32.const 11)
          (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 32)))))
      (loop $hold (br $hold)))
    ;; anything else: ok.
    (i32.store (i32.const 0) (i32.const 12))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
