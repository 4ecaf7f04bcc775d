// Drives tsdav (a CardDAV client written by others) against the server: well-known discovery, the address book's
// properties, every card, an addressbook-query, a card created; then, once told on stdin that the server changed,
// an incremental sync-collection from the token it held. Prints one JSON line per phase.
import { createInterface } from 'node:readline';
import { createDAVClient } from 'tsdav';

const [serverUrl, username, password] = process.argv.slice(2);
const client = await createDAVClient({
  serverUrl,
  credentials: { username, password },
  authMethod: 'Basic',
  defaultAccountType: 'carddav',
});
const books = await client.fetchAddressBooks();
const book = books[0];
const cards = await client.fetchVCards({ addressBook: book });
const found = await client.addressBookQuery({
  url: book.url,
  props: { 'd:getetag': {} },
  filters: {
    'card:prop-filter': {
      _attributes: { name: 'FN' },
      'card:text-match': { _attributes: { 'match-type': 'contains' }, _text: 'ada' },
    },
  },
  depth: '1',
});
const created = await client.createVCard({
  addressBook: book,
  filename: 'tsdav-1.vcf',
  vCardString: 'BEGIN:VCARD\r\nVERSION:3.0\r\nUID:tsdav-1\r\nFN:Made By Tsdav\r\nN:Tsdav;Made;;;\r\nEND:VCARD\r\n',
});
console.log(JSON.stringify({
  books: books.map((b) => ({ url: b.url, displayName: b.displayName, ctag: b.ctag, syncToken: b.syncToken, reports: b.reports })),
  cards: cards.map((c) => ({ url: c.url, etag: c.etag, data: c.data })),
  found: found.map((r) => r.href),
  created: created.status,
}));

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === 'sync') break;
}
const synced = await client.smartCollectionSyncDetailed({
  // tsdav wires the multiget of changed objects in by itself for calendars only: address books pass theirs.
  collection: { ...book, objects: cards, objectMultiGet: client.addressBookMultiGet },
  method: 'webdav',
});
console.log(JSON.stringify({
  syncToken: synced.syncToken,
  created: synced.objects.created.map((o) => o.url),
  updated: synced.objects.updated.map((o) => ({ url: o.url, data: o.data })),
  deleted: synced.objects.deleted.map((o) => o.url),
}));
process.exit(0);
