// A Cloudflare Queues consumer for the tests: each message the Tollgate Worker relayed to
// the `tollgate-events` queue is logged as one JSON line, `{"queue_message": BODY}`, which
// tests/conformance/tests/cloudflare.rs reads back from the wrangler dev log.
export default {
  async queue(batch) {
    for (const message of batch.messages) {
      console.log(JSON.stringify({ queue_message: message.body }));
      message.ack();
    }
  },
  async fetch() {
    return new Response("queue consumer\n");
  },
};
