// A fetch-based Server-Sent Events client for recordd's change feed, as a
// browser application would write it with @microsoft/fetch-event-source
// (an EventSource cannot send an Authorization header).
//
//   node sse_client.js <feed url> <api key> <events to wait for>
//
// Prints {"open": <status>, "requestId": …} once the stream is open, then
// one {"id", "event", "data"} line per event, and exits after the given
// number of events. Run with NODE_PATH pointing at the node_modules the
// package was installed into.
'use strict';

// The library is written for browsers: it reaches for window.fetch,
// window.setTimeout and document's visibility events. Under node, alias
// window to the global object (which has fetch and timers since node 18)
// and give it a document that is never hidden.
globalThis.window = globalThis;
globalThis.document = { hidden: false, addEventListener() {}, removeEventListener() {} };

const { fetchEventSource, EventStreamContentType } = require('@microsoft/fetch-event-source');

const [url, key, want] = process.argv.slice(2);
const ctrl = new AbortController();
let seen = 0;

class Fatal extends Error {}

fetchEventSource(url, {
    headers: { Authorization: `Bearer ${key}` },
    signal: ctrl.signal,
    openWhenHidden: true, // no document to watch
    fetch: globalThis.fetch,
    async onopen(resp) {
        const ct = resp.headers.get('content-type') || '';
        if (!resp.ok || !ct.startsWith(EventStreamContentType)) {
            throw new Fatal(`status ${resp.status} ${ct}: ${await resp.text()}`);
        }
        console.log(JSON.stringify({ open: resp.status, requestId: resp.headers.get('x-request-id') }));
    },
    onmessage(ev) {
        // the library reports comment-only blocks (": stream open",
        // ": keep-alive") as messages without data: skip them
        if (ev.data === '') return;
        console.log(JSON.stringify({ id: ev.id, event: ev.event, data: JSON.parse(ev.data) }));
        if (++seen >= Number(want)) ctrl.abort();
    },
    onclose() {
        throw new Fatal('the server closed the stream');
    },
    onerror(err) {
        throw err; // no retries: the test wants to see every failure
    },
}).then(
    () => process.exit(0),
    (err) => {
        console.error(String(err && err.stack ? err.stack : err));
        process.exit(1);
    },
);
