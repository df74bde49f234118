package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"nebula.dev/nebula/bench/stats"
	"nebula.dev/nebula/events"
)

// invokeOptions are the flags of `nebula invoke`.
type invokeOptions struct {
	id          string
	source      string
	typ         string
	contentType string
	subject     string
	data        string
	file        string
	extensions  []string
	structured  bool
	timeout     time.Duration
	count       int
	concurrency int
	http        bool
	method      string
	headers     []string

	// Which flags were given, for the checks that depend on it.
	idSet, dataSet, contentTypeSet, methodSet bool
}

// Defaults of `nebula invoke`, as Knative's `func invoke` has them in
// spirit: a source and type that say where the event came from.
const (
	defaultInvokeSource  = "/nebula/invoke"
	defaultInvokeType    = "dev.nebula.invoke"
	defaultInvokeCT      = "application/json"
	defaultInvokeTimeout = 30 * time.Second
	maxErrorBody         = 64 << 10 // bytes of a non-2xx body shown
)

func newInvokeCommand() *cobra.Command {
	var o invokeOptions
	cmd := &cobra.Command{
		Use:   "invoke URL [flags]",
		Short: "Send a CloudEvent to a function and print its reply and timings",
		Long: `Invoke sends one CloudEvent to URL, a function's front door (the task's
$PORT), and prints the HTTP status, the reply event's attributes (one
"name: value" per line, sorted by name), its data, and the phases of the
Server-Timing header in milliseconds. A 202 means the function ran and wrote
nothing: there is no reply event.

The event is sent in binary mode (attributes in ce-* headers, the data as
the body), as Knative does, or with --structured as one
application/cloudevents+json document. The reply comes back in the same
mode. Its id is a new UUID unless --id is given, its time now; its data is
--data, the file named by --file ("-" for standard input) or nothing.

With --http it sends a plain HTTP request instead (--method, POST by
default, to URL with its path and query, the data as the body with
--content-type, headers from --header): the front door runs it as a plain
HTTP invocation (CGI-style) and the reply is printed as the status line,
the headers (lower-case, sorted, Date omitted), a blank line and the body.

A response other than 2xx prints the status and the body on standard error
and exits with status 1.

With --count N the event is sent N times over --concurrency C connections
(C requests in flight at most), each with its own id (a new UUID, or ID-1
to ID-N when --id is given), and a one-line summary is printed instead of
the replies: the count of each status and the 50th and 99th percentiles of
the client-side time (request sent to reply read) and of each Server-Timing
phase. The exit status is 1 when any request failed.`,
		Example: `  # A JSON event in binary mode, with an extension (CE_TENANT in the function):
  nebula invoke http://localhost:8080 --data '{"name":"world"}' -e tenant=acme

  # Text from a file, structured mode:
  nebula invoke http://localhost:8080 --structured --content-type text/plain --file hello.txt

  # Data from standard input:
  echo -n hello | nebula invoke http://localhost:8080 --content-type text/plain --file -

  # A plain HTTP request (no CloudEvent), as func invoke's http format or curl:
  nebula invoke --http http://localhost:8080/orders?id=7 --data '{"qty":1}' -H 'X-Tenant: acme'

  # A burst of 200 events over 8 connections, then the summary:
  nebula invoke http://localhost:8080 --data '{}' --count 200 --concurrency 8`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			o.idSet, o.dataSet, o.contentTypeSet = f.Changed("id"), f.Changed("data"), f.Changed("content-type")
			o.methodSet = f.Changed("method")
			return runInvoke(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.id, "id", "", "the event's id (default a new UUID)")
	f.StringVar(&o.source, "source", defaultInvokeSource, "the event's source, a URI-reference")
	f.StringVar(&o.typ, "type", defaultInvokeType, "the event's type")
	f.StringVar(&o.contentType, "content-type", defaultInvokeCT, "the event's datacontenttype, a media type (set when there is data or when given)")
	f.StringVar(&o.subject, "subject", "", "the event's subject (default none)")
	f.StringVar(&o.data, "data", "", "the event's data, as given")
	f.StringVar(&o.file, "file", "", `read the event's data from this file ("-" for standard input)`)
	f.StringArrayVarP(&o.extensions, "extension", "e", nil, "set an extension attribute, NAME=VALUE; NAME is lower-case letters and digits (repeatable)")
	f.BoolVar(&o.structured, "structured", false, "send in structured mode (application/cloudevents+json) instead of binary mode")
	f.DurationVar(&o.timeout, "timeout", defaultInvokeTimeout, "give up on a request after this long, body included (0: never)")
	f.IntVar(&o.count, "count", 1, "send the event this many times and print a summary instead of the replies")
	f.IntVar(&o.concurrency, "concurrency", 1, "with --count, the connections (and requests in flight) to use at most")
	f.BoolVar(&o.http, "http", false, "send a plain HTTP request, not a CloudEvent")
	f.StringVar(&o.method, "method", http.MethodPost, "with --http, the request's method")
	f.StringArrayVarP(&o.headers, "header", "H", nil, `add a request header, "Name: value" (repeatable)`)
	return cmd
}

// check rejects flag values that cannot make an event, naming the flag.
// The event's attributes themselves are checked by sdk-go in newEvent.
func (o invokeOptions) check() error {
	if o.dataSet && o.file != "" {
		return errors.New("--data and --file: give at most one of them")
	}
	if _, err := url.Parse(o.source); err != nil {
		return fmt.Errorf("--source %q: not a URI-reference: %w", o.source, errors.Unwrap(err))
	}
	if _, _, err := mime.ParseMediaType(o.contentType); err != nil {
		return fmt.Errorf("--content-type %q: not a media type: %w", o.contentType, err)
	}
	if o.timeout < 0 {
		return fmt.Errorf("--timeout %v: must not be negative", o.timeout)
	}
	if o.count < 1 {
		return fmt.Errorf("--count %d: must be at least 1", o.count)
	}
	if o.concurrency < 1 {
		return fmt.Errorf("--concurrency %d: must be at least 1", o.concurrency)
	}
	if o.http && (o.structured || len(o.extensions) > 0 || o.idSet || o.subject != "") {
		return errors.New("--http sends no CloudEvent: --structured, --extension, --id and --subject do not apply")
	}
	if o.methodSet && !o.http {
		return errors.New("--method applies to --http only (CloudEvents are POSTed)")
	}
	if !validMethod(o.method) {
		return fmt.Errorf("--method %q: not an HTTP method token", o.method)
	}
	if _, err := o.headerMap(); err != nil {
		return err
	}
	_, err := o.extensionMap()
	return err
}

// validMethod tells an HTTP method token (RFC 9110 §9.1).
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// headerMap parses the --header flags.
func (o invokeOptions) headerMap() (http.Header, error) {
	h := http.Header{}
	for _, kv := range o.headers {
		k, v, ok := strings.Cut(kv, ":")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || !validMethod(k) || strings.ContainsAny(v, "\r\n") {
			return nil, fmt.Errorf(`--header %q: want "Name: value"`, kv)
		}
		h.Add(k, v)
	}
	return h, nil
}

// coreAttributeFlags maps the CloudEvents core attributes to the flag that
// sets each, if any.
var coreAttributeFlags = map[string]string{
	"specversion":     "",
	"id":              "--id",
	"source":          "--source",
	"type":            "--type",
	"subject":         "--subject",
	"time":            "",
	"datacontenttype": "--content-type",
	"dataschema":      "",
	"data":            "--data or --file",
}

// extensionMap parses the --extension flags.
func (o invokeOptions) extensionMap() (map[string]string, error) {
	exts := make(map[string]string, len(o.extensions))
	for _, kv := range o.extensions {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--extension %q: want NAME=VALUE", kv)
		}
		if !events.ValidAttributeName(k) {
			return nil, fmt.Errorf("--extension %q: the name %q is not a CloudEvents attribute name: lower-case letters and digits (a-z, 0-9), at least one", kv, k)
		}
		if flag, ok := coreAttributeFlags[k]; ok {
			if flag != "" {
				return nil, fmt.Errorf("--extension %q: %s is a core attribute, not an extension: use %s", kv, k, flag)
			}
			return nil, fmt.Errorf("--extension %q: %s is a core attribute, not an extension", kv, k)
		}
		if _, dup := exts[k]; dup {
			return nil, fmt.Errorf("--extension %q: %s is given more than once", kv, k)
		}
		exts[k] = v
	}
	return exts, nil
}

// checkURL accepts an absolute http or https URL.
func checkURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("URL %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("URL %q: want http://HOST[:PORT][/PATH] or https://…", s)
	}
	return u.String(), nil
}

// payload returns the event's data: --data, --file, or nil.
func (o invokeOptions) payload(stdin io.Reader) ([]byte, error) {
	switch {
	case o.dataSet:
		return []byte(o.data), nil
	case o.file == "-":
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("--file -: reading standard input: %w", err)
		}
		return b, nil
	case o.file != "":
		b, err := os.ReadFile(o.file)
		if err != nil {
			return nil, fmt.Errorf("--file: %w", err)
		}
		return b, nil
	}
	return nil, nil
}

// newEvent builds the event with the given id and data, checked by sdk-go.
func (o invokeOptions) newEvent(id string, data []byte, exts map[string]string) (event.Event, error) {
	ev := event.New(event.CloudEventsVersionV1)
	ev.SetID(id)
	ev.SetSource(o.source)
	ev.SetType(o.typ)
	ev.SetTime(time.Now())
	if o.subject != "" {
		ev.SetSubject(o.subject)
	}
	for k, v := range exts {
		ev.SetExtension(k, v)
	}
	if data != nil || o.contentTypeSet {
		ev.SetDataContentType(o.contentType)
	}
	if data != nil {
		ev.DataEncoded = data
		ev.DataBase64 = needsBase64(o.contentType, data)
	}
	if err := ev.Validate(); err != nil {
		return ev, o.attributeError(err)
	}
	return ev, nil
}

// needsBase64 tells whether structured mode must carry data as data_base64:
// the events package's rule, the one encoding every receiver (sdk-go v2.16.2
// included) decodes back to the same bytes. Data goes as a JSON value for
// application/json or text/json when it is valid JSON, as a JSON string
// when it is valid UTF-8 of a type not ending in "json", and as base64
// otherwise. Binary mode sends the bytes as they are either way.
func needsBase64(contentType string, data []byte) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch {
	case (mt == "application/json" || mt == "text/json") && json.Valid(data):
		return false
	case !strings.HasSuffix(mt, "json") && utf8.Valid(data):
		return false
	}
	return true
}

// attributeError rewords sdk-go's validation error in terms of the flag
// that set the attribute.
func (o invokeOptions) attributeError(err error) error {
	var ve event.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	values := map[string]string{
		"id": o.id, "source": o.source, "type": o.typ,
		"subject": o.subject, "datacontenttype": o.contentType,
	}
	for _, attr := range slices.Sorted(maps.Keys(ve)) {
		if name, ok := strings.CutPrefix(attr, "extension:"); ok {
			return fmt.Errorf("--extension %s: %w", name, ve[attr])
		}
		if flag := coreAttributeFlags[attr]; flag != "" {
			return fmt.Errorf("%s %q: %w", flag, values[attr], ve[attr])
		}
		return fmt.Errorf("%s: %w", attr, ve[attr])
	}
	return err
}

// newRequest encodes ev as a POST to target, binary or structured.
func newRequest(ctx context.Context, target string, ev *event.Event, structured bool) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, nil)
	if err != nil {
		return nil, err
	}
	if structured {
		ctx = binding.WithForceStructured(ctx)
	} else {
		ctx = binding.WithForceBinary(ctx)
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(ev), req); err != nil {
		return nil, fmt.Errorf("encoding the event: %w", err)
	}
	// sdk-go does not percent-encode ce-* values as the HTTP binding
	// §3.1.3.2 requires of a sender.
	for k, vs := range req.Header {
		if strings.HasPrefix(k, "Ce-") {
			for i, v := range vs {
				vs[i] = percentEncode(v)
			}
		}
	}
	return req, nil
}

// percentEncode encodes what the HTTP binding §3.1.3.2 requires of a
// ce-* header value: space, '"', '%' and every byte outside 0x21–0x7E.
func percentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '"' || c == '%' || c >= 0x7f {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// percentDecodeReply decodes the ce-* headers of a binary-mode reply
// (HTTP binding §3.1.3.2), which sdk-go does not do; a malformed value is
// left as it is.
func percentDecodeReply(h http.Header) {
	for k, vs := range h {
		if !strings.HasPrefix(k, "Ce-") {
			continue
		}
		for i, v := range vs {
			if d, err := url.PathUnescape(v); err == nil && utf8.ValidString(d) {
				vs[i] = d
			}
		}
	}
}

// newPlainRequest is the request of --http.
func (o invokeOptions) newPlainRequest(ctx context.Context, target string, data []byte, h http.Header) (*http.Request, error) {
	var body io.Reader
	if data != nil {
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, o.method, target, body)
	if err != nil {
		return nil, err
	}
	if data != nil || o.contentTypeSet {
		req.Header.Set("Content-Type", o.contentType)
	}
	for k, vs := range h {
		req.Header[k] = slices.Clone(vs)
	}
	return req, nil
}

// newInvokeClient returns a plain net/http client with at most conns
// connections to the host, that does not follow redirects (a redirected
// POST would become a GET).
func newInvokeClient(timeout time.Duration, conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxConnsPerHost = conns
	tr.MaxIdleConnsPerHost = conns
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func runInvoke(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, rawURL string, o invokeOptions) error {
	target, err := checkURL(rawURL)
	if err != nil {
		return err
	}
	if err := o.check(); err != nil {
		return err
	}
	exts, err := o.extensionMap()
	if err != nil {
		return err
	}
	data, err := o.payload(stdin)
	if err != nil {
		return err
	}
	headers, err := o.headerMap()
	if err != nil {
		return err
	}
	if o.http {
		conns := min(o.concurrency, o.count)
		client := newInvokeClient(o.timeout, conns)
		defer client.CloseIdleConnections()
		newReq := func(int) (*http.Request, error) { return o.newPlainRequest(ctx, target, data, headers) }
		if o.count == 1 {
			return invokePlainOnce(client, stdout, stderr, target, newReq)
		}
		results := burst(client, o.count, conns, newReq)
		fmt.Fprintln(stdout, summarize(results, conns))
		return burstError(results)
	}
	ids := func(i int) string { // i in [0, count)
		switch {
		case o.idSet && o.count == 1:
			return o.id
		case o.idSet:
			return o.id + "-" + strconv.Itoa(i+1)
		}
		return uuid.NewString()
	}
	// The first event checks the attributes before anything is sent.
	ev, err := o.newEvent(ids(0), data, exts)
	if err != nil {
		return err
	}
	if o.count == 1 {
		client := newInvokeClient(o.timeout, 1)
		defer client.CloseIdleConnections()
		return invokeOnce(ctx, client, stdout, stderr, target, &ev, o.structured, headers)
	}
	conns := min(o.concurrency, o.count)
	client := newInvokeClient(o.timeout, conns)
	defer client.CloseIdleConnections()
	results := burst(client, o.count, conns, func(i int) (*http.Request, error) {
		ev, err := o.newEvent(ids(i), data, exts)
		if err != nil {
			return nil, err
		}
		req, err := newRequest(ctx, target, &ev, o.structured)
		if err == nil {
			addHeaders(req, headers)
		}
		return req, err
	})
	fmt.Fprintln(stdout, summarize(results, conns))
	return burstError(results)
}

// invokeOnce sends ev and prints the reply.
func invokeOnce(ctx context.Context, client *http.Client, stdout, stderr io.Writer, target string, ev *event.Event, structured bool, headers http.Header) error {
	req, err := newRequest(ctx, target, ev, structured)
	if err != nil {
		return err
	}
	addHeaders(req, headers)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	statusLine := resp.Proto + " " + resp.Status
	timing := "server-timing: " + formatPhases(parseServerTiming(resp.Header.Get("Server-Timing")))

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		fmt.Fprintln(stderr, statusLine)
		if len(body) > 0 {
			fmt.Fprintln(stderr, strings.TrimRight(string(body), "\n"))
		}
		fmt.Fprintln(stderr, timing)
		return fmt.Errorf("%s answered %s", target, resp.Status)
	}

	fmt.Fprintln(stdout, statusLine)
	percentDecodeReply(resp.Header)
	msg := cehttp.NewMessageFromHttpResponse(resp)
	if msg.ReadEncoding() == binding.EncodingUnknown {
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return fmt.Errorf("reading the reply: %w", err)
		}
		if len(body) > 0 {
			writeData(stdout, body)
			fmt.Fprintln(stdout, timing)
			return fmt.Errorf("the reply is not a CloudEvent (Content-Type %q)", resp.Header.Get("Content-Type"))
		}
		if resp.StatusCode == http.StatusAccepted {
			fmt.Fprintln(stdout, "accepted, no reply")
		} else {
			fmt.Fprintln(stdout, "no reply")
		}
		fmt.Fprintln(stdout, timing)
		return nil
	}
	reply, err := binding.ToEvent(ctx, msg)
	if err != nil {
		return fmt.Errorf("decoding the reply event: %w", err)
	}
	for _, a := range replyAttributes(reply) {
		fmt.Fprintf(stdout, "%s: %s\n", a[0], a[1])
	}
	if d := reply.Data(); len(d) > 0 {
		fmt.Fprintln(stdout)
		writeData(stdout, d)
	}
	fmt.Fprintln(stdout, timing)
	return nil
}

// addHeaders sets the --header headers on req (after the event's own).
func addHeaders(req *http.Request, h http.Header) {
	for k, vs := range h {
		req.Header[k] = slices.Clone(vs)
	}
}

// invokePlainOnce sends the --http request and prints the reply: status
// line, headers, body, timings.
func invokePlainOnce(client *http.Client, stdout, stderr io.Writer, target string, newReq func(int) (*http.Request, error)) error {
	req, err := newReq(0)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the reply: %w", err)
	}
	statusLine := resp.Proto + " " + resp.Status
	timing := "server-timing: " + formatPhases(parseServerTiming(resp.Header.Get("Server-Timing")))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintln(stderr, statusLine)
		if len(body) > 0 {
			fmt.Fprintln(stderr, strings.TrimRight(string(body[:min(len(body), maxErrorBody)]), "\n"))
		}
		fmt.Fprintln(stderr, timing)
		return fmt.Errorf("%s answered %s", target, resp.Status)
	}
	fmt.Fprintln(stdout, statusLine)
	for _, k := range slices.Sorted(maps.Keys(resp.Header)) {
		if k == "Date" || k == "Server-Timing" {
			continue
		}
		for _, v := range resp.Header[k] {
			fmt.Fprintf(stdout, "%s: %s\n", strings.ToLower(k), v)
		}
	}
	if len(body) > 0 {
		fmt.Fprintln(stdout)
		writeData(stdout, body)
	}
	fmt.Fprintln(stdout, timing)
	return nil
}

// writeData writes b and a newline unless it ends with one.
func writeData(w io.Writer, b []byte) {
	_, _ = w.Write(b)
	if !bytes.HasSuffix(b, []byte("\n")) {
		fmt.Fprintln(w)
	}
}

// replyAttributes returns the attributes set on ev as name, value pairs,
// sorted by name.
func replyAttributes(ev *event.Event) [][2]string {
	attrs := [][2]string{
		{"specversion", ev.SpecVersion()},
		{"id", ev.ID()},
		{"source", ev.Source()},
		{"type", ev.Type()},
	}
	add := func(name, value string) {
		if value != "" {
			attrs = append(attrs, [2]string{name, value})
		}
	}
	add("subject", ev.Subject())
	add("datacontenttype", ev.DataContentType())
	add("dataschema", ev.DataSchema())
	if t := ev.Time(); !t.IsZero() {
		add("time", t.UTC().Format(time.RFC3339Nano))
	}
	for k, v := range ev.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			s = fmt.Sprint(v)
		}
		attrs = append(attrs, [2]string{k, s})
	}
	sort.Slice(attrs, func(i, j int) bool { return attrs[i][0] < attrs[j][0] })
	return attrs
}

// phase is one metric of a Server-Timing header.
type phase = events.ServerTimingMetric

// parseServerTiming returns the metrics of a Server-Timing value in order;
// one whose dur does not parse shows as 0.
func parseServerTiming(h string) []phase {
	metrics, _ := events.ParseServerTiming(h)
	return metrics
}

func formatPhases(phases []phase) string {
	if len(phases) == 0 {
		return "(none)"
	}
	parts := make([]string, len(phases))
	for i, p := range phases {
		parts[i] = p.Name + "=" + formatMillis(p.Millis)
	}
	return strings.Join(parts, " ")
}

func formatMillis(ms float64) string { return strconv.FormatFloat(ms, 'f', 3, 64) + "ms" }

// result is the outcome of one request of a burst.
type result struct {
	status int // 0 when the request failed
	err    error
	client time.Duration // request sent to body read
	phases []phase
}

// burst sends count requests made by newReq, at most conns at a time (one
// goroutine per connection, each sending its requests one after another).
func burst(client *http.Client, count, conns int, newReq func(int) (*http.Request, error)) []result {
	results := make([]result, count)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= count {
					return
				}
				results[i] = send(client, newReq, i)
			}
		})
	}
	wg.Wait()
	return results
}

func send(client *http.Client, newReq func(int) (*http.Request, error), i int) result {
	req, err := newReq(i)
	if err != nil {
		return result{err: err}
	}
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return result{err: err}
	}
	_, err = io.Copy(io.Discard, resp.Body) // read it all: the connection is reused
	resp.Body.Close()
	r := result{
		status: resp.StatusCode,
		client: time.Since(t0),
		phases: parseServerTiming(resp.Header.Get("Server-Timing")),
	}
	if err != nil {
		r.err = fmt.Errorf("reading the reply: %w", err)
	}
	return r
}

// summarize returns the one-line summary of a burst: the count of each
// status, then p50 and p99 of the client-side time and of each
// Server-Timing phase.
func summarize(results []result, conns int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d events over %d connection", len(results), conns)
	if conns != 1 {
		b.WriteByte('s')
	}
	b.WriteByte(':')
	counts := map[int]int{}
	var errs int
	var client []float64
	var names []string
	phases := map[string][]float64{}
	for _, r := range results {
		if r.err != nil {
			errs++
			continue
		}
		counts[r.status]++
		client = append(client, float64(r.client)/float64(time.Millisecond))
		for _, p := range r.phases {
			if _, ok := phases[p.Name]; !ok {
				names = append(names, p.Name)
			}
			phases[p.Name] = append(phases[p.Name], p.Millis)
		}
	}
	for _, code := range slices.Sorted(maps.Keys(counts)) {
		fmt.Fprintf(&b, " %d=%d", code, counts[code])
	}
	if errs > 0 {
		fmt.Fprintf(&b, " error=%d", errs)
	}
	writeQuantiles := func(name string, v []float64) {
		slices.Sort(v)
		fmt.Fprintf(&b, "; %s p50=%s p99=%s", name, formatMillis(stats.Quantile(v, 0.50)), formatMillis(stats.Quantile(v, 0.99)))
	}
	if len(client) > 0 {
		writeQuantiles("client", client)
	}
	for _, n := range names {
		writeQuantiles(n, phases[n])
	}
	return b.String()
}

// burstError reports the requests of a burst that failed or were not
// answered 2xx.
func burstError(results []result) error {
	var failed int
	var first error
	for _, r := range results {
		switch {
		case r.err != nil:
			failed++
			if first == nil {
				first = r.err
			}
		case r.status < 200 || r.status > 299:
			failed++
		}
	}
	switch {
	case failed == 0:
		return nil
	case first != nil:
		return fmt.Errorf("%d of %d events failed (first error: %w)", failed, len(results), first)
	}
	return fmt.Errorf("%d of %d events were not answered 2xx", failed, len(results))
}
