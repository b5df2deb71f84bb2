// GraphQL Code Generator for the news gateway: typed documents (client preset) from the
// committed schema and the named operations in ../operations, plus the persisted
// documents manifest the gateway loads with `gateway persisted add`.
//
//   npm ci && npm run codegen
//   gateway persisted add src/gql/persisted-documents.json
//
// Clients then send {"documentId": "sha256:<hash>", "variables": ...} (see the README).
import type { CodegenConfig } from "@graphql-codegen/cli";

const config: CodegenConfig = {
  schema: "../../schema.graphql",
  documents: ["../operations/*.graphql"],
  ignoreNoDocuments: false,
  generates: {
    "./src/gql/": {
      preset: "client",
      config: {
        scalars: { DateTime: "string" },
        enumsAsTypes: true,
      },
      presetConfig: {
        persistedDocuments: {
          // the gateway checks sha256 (the preset's default is sha1)
          hashAlgorithm: "sha256",
          mode: "replaceDocumentWithHash",
        },
      },
    },
  },
};

export default config;
