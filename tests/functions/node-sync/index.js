'use strict';
// Callback-style and plain synchronous handlers, the way older Lambda functions are written.

let invocationsInThisProcess = 0;

exports.handler = function (event, context, callback) {
  invocationsInThisProcess += 1;
  if (event && event.fail) {
    callback(new TypeError(event.fail));
    return;
  }
  setTimeout(() => {
    callback(null, {
      style: 'callback',
      echo: event,
      requestId: context.awsRequestId,
      functionName: context.functionName,
      memoryLimitInMB: context.memoryLimitInMB,
      remainingMs: context.getRemainingTimeInMillis(),
      invocationsInThisProcess,
    });
  }, 5);
};

exports.plain = function (event, context) {
  return { style: 'plain', echo: event, requestId: context.awsRequestId };
};
