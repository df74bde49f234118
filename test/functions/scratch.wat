;; scratch reads up to 4 KiB of stdin into memory at offset 16. Given no
;; input, it writes the 64 bytes at offset 16 to stdout instead: whatever the
;; instance's memory holds there. A fresh instance holds zeros; anything else
;; is a previous invocation's data leaking through reused memory.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; Layout: iovec at 0 {buf, len}; count at 8; buffer at 16.
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 4096))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (if (i32.eqz (i32.load (i32.const 8)))
      (then
        (i32.store (i32.const 4) (i32.const 64))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))))
