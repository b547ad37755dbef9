// Opens feed.html in headless Chromium (playwright-core driving the
// system's chromium) and reports what the page's fetch-based SSE reader
// sees.
//
//   node drive_chromium.js <chromium> <page url> <events to wait for> [record id]
//
// Prints {"state", "requestId"} once the page's fetch settled (state
// "open" or the error), then, when open, {"events": [...]} after that many
// events; with a record id, then {"writes": …}, what the page read of a
// create, a conditional update and a stale delete of that record made
// from the page (window.writeFromPage); and exits 0. NODE_PATH must reach
// playwright-core.
'use strict';
const { chromium } = require('playwright-core');

const [executablePath, pageUrl, want, writeId] = process.argv.slice(2);

(async () => {
    const browser = await chromium.launch({
        executablePath,
        headless: true,
        args: ['--no-sandbox', '--disable-dev-shm-usage'],
    });
    try {
        const page = await browser.newPage();
        const messages = [];
        page.on('console', (m) => messages.push(`${m.type()}: ${m.text()}`));
        await page.goto(pageUrl);
        await page.waitForFunction(() => window.feed && window.feed.state !== 'pending', null, {
            timeout: 60000,
        });
        const feed = await page.evaluate(() => window.feed);
        console.log(JSON.stringify({ state: feed.state, requestId: feed.requestId, console: messages }));
        if (feed.state === 'open') {
            await page.waitForFunction((n) => window.feed.events.length >= n, Number(want), {
                timeout: 60000,
            });
            const events = await page.evaluate(() => window.feed.events);
            console.log(JSON.stringify({ events }));
            if (writeId) {
                const q = new URL(pageUrl).searchParams;
                const writes = await page.evaluate(
                    ([api, key, id]) => window.writeFromPage(api, key, id),
                    [q.get('api'), q.get('key'), writeId],
                );
                console.log(JSON.stringify({ writes }));
            }
        }
    } finally {
        await browser.close();
    }
})().then(
    () => process.exit(0),
    (err) => {
        console.error(String(err && err.stack ? err.stack : err));
        process.exit(1);
    },
);
