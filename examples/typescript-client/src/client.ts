// A minimal typed client: documents from the client preset (hashes only, the gateway
// holds their text), sent by id; results and variables typed by the generated code.
import type { TypedDocumentNode } from "@graphql-typed-document-node/core";

interface Persisted {
  __meta__?: { hash?: string };
}

export class GatewayError extends Error {
  constructor(readonly errors: Array<{ message: string; extensions?: { code?: string } }>) {
    super(errors.map((e) => `${e.extensions?.code ?? "ERROR"}: ${e.message}`).join("; "));
  }
}

export async function execute<TResult, TVariables>(
  url: string,
  document: TypedDocumentNode<TResult, TVariables>,
  variables: TVariables,
): Promise<TResult> {
  const hash = (document as unknown as Persisted).__meta__?.hash;
  if (!hash) throw new Error("not a persisted document: generate with persistedDocuments (codegen.ts)");
  const resp = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/graphql-response+json" },
    body: JSON.stringify({ documentId: `sha256:${hash}`, variables }),
  });
  const body = (await resp.json()) as { data?: TResult; errors?: GatewayError["errors"] };
  if (body.errors?.length) throw new GatewayError(body.errors);
  return body.data as TResult;
}
