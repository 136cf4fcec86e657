// A streaming Node.js function (awslambda.streamifyResponse), as Lambda's Node.js runtime runs them.
//
// The event decides what it writes: `chunks` chunks `chunk i\n`, `interval_ms` apart; with
// `fail_after`, it throws a RangeError after that many chunks; with `exit_after`, the process exits
// with status 3 after that many chunks; with `http`, the stream carries
// HttpResponseStream's metadata prelude first; with `megabytes`, it writes that many 1 MB chunks instead.

const sleep = (milliseconds) => new Promise((resolve) => setTimeout(resolve, milliseconds));

export const handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  let stream = responseStream;
  if (event.http) {
    stream = awslambda.HttpResponseStream.from(responseStream, {
      statusCode: 201,
      headers: { 'content-type': 'text/plain' },
    });
  }
  if (event.megabytes) {
    for (let index = 0; index < event.megabytes; index += 1) {
      stream.write(Buffer.alloc(1024 * 1024, 'x'));
    }
    stream.end();
    return;
  }
  const chunks = event.chunks ?? 3;
  for (let index = 0; index < chunks; index += 1) {
    if (event.exit_after === index) {
      process.exit(3);
    }
    if (event.fail_after === index) {
      throw new RangeError(`failed after ${index} chunks`);
    }
    stream.write(`chunk ${index}\n`);
    if (event.interval_ms) {
      await sleep(event.interval_ms);
    }
  }
  console.log('streamed', chunks, 'chunks for', context.awsRequestId);
  stream.end();
});
