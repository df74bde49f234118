;; badimport imports a function no host provides: Nebula must reject it
;; before running anything.
(module
  (import "env" "nope" (func $nope))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $nope)))
