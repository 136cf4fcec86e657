// The first Node.js function to deploy on Wisp: greets whoever the event names.

export const handler = async (event, context) => {
  const name = (event && event.name) || 'world';
  const greeting = process.env.GREETING || 'Hello';
  return {
    message: `${greeting}, ${name}!`,
    requestId: context.awsRequestId,
    function: context.functionName,
  };
};
