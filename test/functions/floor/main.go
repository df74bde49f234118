// Command floor is the load benchmark's floor: a bare Go net/http handler
// that answers a binary-mode CloudEvent by echoing its data, natively, in
// a process of its own — as a function task's host is. It listens on
// 127.0.0.1:$PORT.
package main

import (
	"io"
	"log"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h := w.Header()
		h.Set("Ce-Specversion", "1.0")
		h.Set("Ce-Id", "reply")
		h.Set("Ce-Source", "/floor")
		h.Set("Ce-Type", r.Header.Get("Ce-Type")+".reply")
		h.Set("Content-Type", r.Header.Get("Content-Type"))
		w.Write(data)
	})
	log.Fatal(http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil))
}
