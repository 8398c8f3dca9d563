// Sends events to nudge through Segment's Node SDK (@segment/analytics-node, from npm,
// unmodified; `npm ci` in this folder installs it): the same identify, tracks and screen as
// segment_python.py. Called by the engine's integration test `segment::*` with the URL to send
// to, the write key and a prefix for the user ids; prints `flushed` once the SDK has sent
// everything, and each error the SDK reports on stderr.
const { Analytics } = require('@segment/analytics-node')

const [url, key, prefix] = process.argv.slice(2)
const analytics = new Analytics({
  writeKey: key,
  host: url,
  flushAt: 20,
  flushInterval: 100,
  maxRetries: 5,
})
const errors = []
analytics.on('error', (error) => errors.push(error))
const user = `${prefix}-1`
const at = Date.now() - 2 * 3600 * 1000
const minutes = (n) => new Date(at + n * 60 * 1000)
analytics.identify({
  userId: user,
  traits: { plan: 'gold', city: 'Hangzhou' },
  context: { timezone: 'Asia/Shanghai' },
  timestamp: minutes(0),
  messageId: `${prefix}-identify`,
})
analytics.track({
  userId: user,
  event: 'Order Completed',
  properties: { order_id: 'o-1', total: 30 },
  timestamp: minutes(1),
  messageId: `${prefix}-order`,
})
analytics.track({
  userId: user,
  event: 'Coupon Applied',
  properties: { coupon: 'WELCOME' },
  timestamp: minutes(2),
  messageId: `${prefix}-coupon`,
})
analytics.screen({
  userId: user,
  name: 'Home',
  properties: { from: 'share' },
  timestamp: minutes(3),
  messageId: `${prefix}-screen`,
})
analytics.track({
  anonymousId: `${prefix}-visitor`,
  event: 'Application Opened',
  timestamp: minutes(4),
  messageId: `${prefix}-open`,
})
analytics.closeAndFlush({ timeout: 30000 }).then(() => {
  for (const error of errors) console.error(`error: ${error && (error.reason || error.message || error.code || JSON.stringify(error))}`)
  console.log(errors.length === 0 ? 'flushed' : 'failed')
})
