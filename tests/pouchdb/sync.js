// A real PouchDB client, as the apps couchshare serves use it: an in-memory local database
// synced live with a CouchDB database through the URL from an operator-written Secret.
//
// Environment: DB_URL (with credentials), MODE (`sync` or `refused`), EXPECT_DOC (sync: the id
// of a document the test writes on the server once this prints PUSHED).
// Prints PUSHED, PULLED or REFUSED <status> on stdout; exits non-zero on anything else.
'use strict';
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-replication'));

const url = process.env.DB_URL;
const mode = process.env.MODE || 'sync';
const fail = (msg) => { console.error(msg); process.exit(1); };
const deadline = setTimeout(() => fail(`timed out in mode ${mode}`), 45000);

async function refused() {
  const remote = new PouchDB(url, { skip_setup: true });
  try {
    await PouchDB.replicate(remote, new PouchDB('local-refused', { adapter: 'memory' }));
    fail('replication was allowed');
  } catch (err) {
    const status = err.status || (err.result && err.result.status) || 0;
    if (status === 401 || status === 403) {
      console.log(`REFUSED ${status}`);
      clearTimeout(deadline);
      process.exit(0);
    }
    fail(`unexpected error: ${err.name} ${err.status} ${err.message}`);
  }
}

async function sync() {
  const expect = process.env.EXPECT_DOC;
  const local = new PouchDB('local', { adapter: 'memory' });
  const remote = new PouchDB(url, { skip_setup: true });
  await local.put({ _id: 'scene-1', type: 'scene', title: 'written offline by the app' });
  const handle = PouchDB.sync(local, remote, { live: true, retry: true });
  handle.on('error', (err) => fail(`sync error: ${err.status} ${err.message}`));
  handle.on('denied', (err) => fail(`sync denied: ${JSON.stringify(err)}`));
  // Pushed: the server has the local document.
  for (;;) {
    try { await remote.get('scene-1'); break; } catch (e) { await new Promise((r) => setTimeout(r, 200)); }
  }
  console.log('PUSHED');
  // Pulled: the document the test writes on the server arrives in the local database.
  for (;;) {
    try { await local.get(expect); break; } catch (e) { await new Promise((r) => setTimeout(r, 200)); }
  }
  console.log('PULLED');
  handle.cancel();
  clearTimeout(deadline);
  process.exit(0);
}

(mode === 'refused' ? refused() : sync()).catch((err) => fail(`${err.name}: ${err.message}`));
