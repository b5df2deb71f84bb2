// Runs graphql-http's server audit against the URL given as the first argument and
// prints one JSON line per audit: {"id", "name", "status", "reason"}.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
const results = await auditServer({ url });
for (const r of results) {
  const line = { id: r.id, name: r.name, status: r.status };
  if (r.status !== 'ok') line.reason = r.reason;
  console.log(JSON.stringify(line));
}
