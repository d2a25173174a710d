#!/usr/bin/env node
// Loads configuration from a Spring Cloud Config compatible server with the third-party
// npm client `cloud-config-client`, exactly as a Node service would, and prints what the
// client sees as one JSON object on stdout. Used by tests/spring.rs.
//
//   node read-config.js --endpoint http://127.0.0.1:8888 --name orders --profiles prod,eu
//                       [--label feature/x] [--keys db.pool,db.url]
//                       [--headers '{"X-Confhub-Instance":"orders-1"}']
//
// Output: {"name", "profiles", "label", "version", "sources": [property source names],
//          "properties": {flat merged keys}, "object": config.toObject(),
//          "objectError": why toObject() threw, or null,
//          "keys": {key: config.get(key)} for each --keys entry}
'use strict'

const client = require('cloud-config-client')

function parseArgs (argv) {
  const args = {}
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i]
    const value = argv[i + 1]
    if (!flag.startsWith('--') || value === undefined) {
      throw new Error('usage: read-config.js --endpoint URL --name NAME --profiles P1,P2 [--label L] [--keys K1,K2] [--headers JSON]')
    }
    args[flag.slice(2)] = value
  }
  for (const required of ['endpoint', 'name', 'profiles']) {
    if (!args[required]) throw new Error('missing --' + required)
  }
  return args
}

async function main () {
  const args = parseArgs(process.argv.slice(2))
  const options = {
    endpoint: args.endpoint,
    name: args.name,
    profiles: args.profiles.split(',')
  }
  if (args.label) options.label = args.label
  // The client's own option for extra request headers (how a Node service names its
  // instance to confhub).
  if (args.headers) options.headers = JSON.parse(args.headers)
  const config = await client.load(options)
  const raw = config.raw
  const keys = {}
  for (const key of (args.keys ? args.keys.split(',') : [])) {
    const value = config.get(key)
    keys[key] = value === undefined ? null : value
  }
  // toObject() nests the flat keys and throws on a key that is both a value and a
  // prefix (logging.level.org.hibernate beside logging.level.org.hibernate.SQL), which
  // Spring serves too: report it rather than failing the run.
  let object = null
  let objectError = null
  try {
    object = config.toObject()
  } catch (err) {
    objectError = String(err && err.message ? err.message : err)
  }
  const out = {
    name: raw.name,
    profiles: raw.profiles,
    label: raw.label,
    version: raw.version,
    sources: raw.propertySources.map((source) => source.name),
    properties: config.properties,
    object,
    objectError,
    keys
  }
  process.stdout.write(JSON.stringify(out) + '\n')
}

main().catch((err) => {
  process.stderr.write('read-config: ' + (err && err.stack ? err.stack : String(err)) + '\n')
  process.exit(1)
})
