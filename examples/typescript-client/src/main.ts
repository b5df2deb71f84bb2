// `node dist/main.js http://127.0.0.1:8000/graphql`: the latest articles and one
// source's first page, printed as JSON.
import { execute } from "./client.js";
import { LatestArticlesDocument, SourceArticlesDocument } from "./gql/graphql.js";

const url = process.argv[2] ?? "http://127.0.0.1:8000/graphql";
const latest = await execute(url, LatestArticlesDocument, { first: 3 });
const page = await execute(url, SourceArticlesDocument, { sources: ["tech-wire"], first: 2 });
const titles: string[] = latest.articles?.nodes.map((n) => n.title) ?? [];
console.log(JSON.stringify({ titles, sources: page.articles?.sources.map((s) => [s.source.id, s.status]) }));
