// The client kits of the database at PG_META_DB_URL, printed as one JSON object {typescript, python}.
// What postgres-meta's server.js does for `supabase gen types` (PG_META_GENERATE_TYPES=<language>), with its own
// functions and default options, once for both languages: one node start and one introspection instead of two.
// Run by prep/clienttypes.py.
import { PostgresMeta } from "@supabase/postgres-meta"
import { getGeneratorMetadata } from "@supabase/postgres-meta/dist/lib/generators.js"
import { generatePython, generateTypescript } from "@supabase/postgrest-typegen"

const schemas = process.env.PG_META_GENERATE_TYPES_INCLUDED_SCHEMAS.split(",")
const pgMeta = new PostgresMeta({ connectionString: process.env.PG_META_DB_URL, max: 1 })
const { data: metadata, error } = await getGeneratorMetadata(pgMeta, { includedSchemas: schemas })
if (error) {
  console.error(error.message)
  process.exit(1)
}
const typescript = await generateTypescript(metadata, {
  detectOneToOneRelationships: false,
  postgrestVersion: undefined,
  defaultSchema: "public",
})
console.log(JSON.stringify({ typescript, python: generatePython(metadata) }))
