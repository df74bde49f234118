;; nostart has no _start export: it is a library, not a command.
(module
  (memory (export "memory") 1)
  (func (export "main")))
