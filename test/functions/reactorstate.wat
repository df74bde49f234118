;; reactorstate is a hostile reactor: every event reports what it finds of
;; earlier events, then leaves traces of its own for the next one to find.
;; The report, written to stdout, is little-endian u32s:
;;
;;	 0 memory size in pages at entry (the snapshot's: 2)
;;	 4 mutable global $g (the snapshot's: 42; events set 7777)
;;	 8 mutable global $events (the snapshot's: 0; events add 1)
;;	12 the word at 4096 (the snapshot's: 0; events write 0xdeadbeef)
;;	16 the word at 2048 ("INIT", written by _initialize)
;;	20 the word at 1024 ("snap", the data segment)
;;	24 errno of fd_fdstat_get(4) (8, EBADF: _initialize and events open
;;	   "." as fd 4)
;;	28 the size of the event's variables (event_env)
;;	32 16 bytes of random_get
;;	48 the word 100 bytes past the snapshot's end after memory.grow
;;	   (0; events then write 0xfeedface there)
;;	52 errno of this event's path_open
;;	56 the word at 16384 before this event copies its variables there (0)
;;	60 the event's variables
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get"
    (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get"
    (func $random_get (param i32 i32) (result i32)))
  (import "nebula_v1" "event_env" (func $event_env (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $g (mut i32) (i32.const 1))
  (global $events (mut i32) (i32.const 0))
  (data (i32.const 1024) "snap")
  (data (i32.const 512) ".")
  ;; Opens "." (at 512) relative to the preopen, fd 3; returns the errno.
  (func $open (result i32)
    (call $path_open (i32.const 3) (i32.const 0) (i32.const 512) (i32.const 1)
      (i32.const 2) ;; O_DIRECTORY
      (i64.const 0x4002) (i64.const 0x4002) (i32.const 0) (i32.const 600)))
  (func (export "_initialize")
    (i32.store (i32.const 2048) (i32.const 0x54494e49)) ;; "INIT"
    (global.set $g (i32.const 42))
    (drop (call $open)))
  (func (export "nebula_handle") (result i32)
    (local $r i32) (local $n i32) (local $old i32)
    (local.set $r (i32.const 8192))
    (i32.store offset=0 (local.get $r) (memory.size))
    (i32.store offset=4 (local.get $r) (global.get $g))
    (i32.store offset=8 (local.get $r) (global.get $events))
    (i32.store offset=12 (local.get $r) (i32.load (i32.const 4096)))
    (i32.store offset=16 (local.get $r) (i32.load (i32.const 2048)))
    (i32.store offset=20 (local.get $r) (i32.load (i32.const 1024)))
    (i32.store offset=24 (local.get $r) (call $fd_fdstat_get (i32.const 4) (i32.const 700)))
    (local.set $n (call $event_env (i32.const 0) (i32.const 0)))
    (i32.store offset=28 (local.get $r) (local.get $n))
    (drop (call $random_get (i32.add (local.get $r) (i32.const 32)) (i32.const 16)))
    ;; grow one page and look past the snapshot's end
    (local.set $old (memory.grow (i32.const 1)))
    (if (i32.lt_s (local.get $old) (i32.const 0)) (then unreachable))
    (local.set $old (i32.add (i32.mul (local.get $old) (i32.const 65536)) (i32.const 100)))
    (i32.store offset=48 (local.get $r) (i32.load (local.get $old)))
    (i32.store offset=52 (local.get $r) (call $open))
    (i32.store offset=56 (local.get $r) (i32.load (i32.const 16384)))
    (drop (call $event_env (i32.const 16384) (local.get $n)))
    (memory.copy (i32.add (local.get $r) (i32.const 60)) (i32.const 16384) (local.get $n))
    ;; traces for the next event
    (i32.store (local.get $old) (i32.const 0xfeedface))
    (i32.store (i32.const 4096) (i32.const 0xdeadbeef))
    (i32.store (i32.const 2048) (i32.const 0))
    (global.set $g (i32.const 7777))
    (global.set $events (i32.add (global.get $events) (i32.const 1)))
    ;; write the report
    (i32.store (i32.const 0) (local.get $r))
    (i32.store (i32.const 4) (i32.add (i32.const 60) (local.get $n)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.const 0)))
