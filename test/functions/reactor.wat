;; reactor is a Nebula reactor (it exports nebula_handle): each event copies
;; stdin to stdout, then the event's variables (nebula_v1.event_env) after
;; a NUL. Stdin's first byte chooses a failure instead: '!' traps,
;; '@' loops until stopped, '#' returns status 3, '$' calls proc_exit(4),
;; '%' calls event_env with a buffer that ends past linear memory (a trap).
;; An event with neither data nor variables, such as the host's warm-up
;; event, returns status 9.
;; _initialize writes "ready" at 32, which every event's reply starts with:
;; it shows the snapshot, not a fresh module.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "nebula_v1" "event_env" (func $event_env (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; Layout: iovec at 0 {buf, len}; count at 8; "ready" at 32; the reply
  ;; is built from 32 on: "ready " then stdin, NUL, the variables.
  (func (export "_initialize")
    (i32.store (i32.const 32) (i32.const 0x64616572)) ;; "read"
    (i32.store16 (i32.const 36) (i32.const 0x2079)))  ;; "y "
  (func $write (param $buf i32) (param $n i32)
    (i32.store (i32.const 0) (local.get $buf))
    (i32.store (i32.const 4) (local.get $n))
    (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (call $proc_exit (i32.const 1)))))
  (func (export "nebula_handle") (result i32)
    (local $end i32) (local $n i32)
    (local.set $end (i32.const 38))
    ;; read all of stdin after "ready "
    (loop $read
      (i32.store (i32.const 0) (local.get $end))
      (i32.store (i32.const 4) (i32.sub (i32.const 60000) (local.get $end)))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (return (i32.const 1))))
      (local.set $n (i32.load (i32.const 8)))
      (local.set $end (i32.add (local.get $end) (local.get $n)))
      (br_if $read (i32.and (i32.ne (local.get $n) (i32.const 0))
                            (i32.lt_u (local.get $end) (i32.const 60000)))))
    (if (i32.gt_u (local.get $end) (i32.const 38))
      (then
        (if (i32.eq (i32.load8_u (i32.const 38)) (i32.const 0x21)) (then unreachable))
        (if (i32.eq (i32.load8_u (i32.const 38)) (i32.const 0x40)) (then (loop $spin (br $spin))))
        (if (i32.eq (i32.load8_u (i32.const 38)) (i32.const 0x23)) (then (return (i32.const 3))))
        (if (i32.eq (i32.load8_u (i32.const 38)) (i32.const 0x24)) (then (call $proc_exit (i32.const 4))))
        (if (i32.eq (i32.load8_u (i32.const 38)) (i32.const 0x25))
          (then (drop (call $event_env (i32.const 65530) (i32.const 7)))))))
    ;; NUL, then the variables if they fit before 64 KiB
    (i32.store8 (local.get $end) (i32.const 0))
    (local.set $n (call $event_env (i32.const 0) (i32.const 0)))
    (if (i32.and (i32.eq (local.get $end) (i32.const 38)) (i32.eqz (local.get $n)))
      (then (return (i32.const 9))))
    (local.set $end (i32.add (local.get $end) (i32.const 1)))
    (if (i32.le_u (i32.add (local.get $end) (local.get $n)) (i32.const 65536))
      (then
        (drop (call $event_env (local.get $end) (local.get $n)))
        (local.set $end (i32.add (local.get $end) (local.get $n)))))
    (call $write (i32.const 32) (i32.sub (local.get $end) (i32.const 32)))
    (i32.const 0)))
