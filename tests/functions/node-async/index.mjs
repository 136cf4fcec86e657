// An ES module with an async handler, as current Lambda Node.js functions are written.

import { greeting } from './lib/greeting.mjs';

export const handler = async (event, context) => {
  if (event && event.fail) {
    throw new RangeError(event.fail);
  }
  await new Promise((resolve) => setTimeout(resolve, 5));
  console.log('handled', context.awsRequestId);
  return {
    style: 'async',
    message: greeting(event && event.name),
    echo: event,
    requestId: context.awsRequestId,
    functionName: context.functionName,
    invokedFunctionArn: context.invokedFunctionArn,
    node: process.version,
  };
};
