// The Azure Bot that posts the approval cards in Teams and receives their Approve / Deny: it runs on
// the app's user-assigned managed identity (no app secret anywhere), with the Teams channel on.
// People get it by installing the Teams app `aegis teams manifest` writes (infra/README.md).
param name string
param tags object = {}
param identityId string
param identityClientId string
param tenantId string = subscription().tenantId
@description('https://<app>.azurewebsites.net: the bot\'s messaging endpoint is its /api/messages')
param appUrl string

resource bot 'Microsoft.BotService/botServices@2022-09-15' = {
  name: name
  location: 'global'
  tags: tags
  kind: 'azurebot'
  sku: { name: 'S1' }
  properties: {
    displayName: 'Aegis'
    description: 'AI incident approvals: Approve or Deny the response steps Aegis proposes.'
    endpoint: '${appUrl}/api/messages'
    msaAppType: 'UserAssignedMSI'
    msaAppId: identityClientId
    msaAppMSIResourceId: identityId
    msaAppTenantId: tenantId
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled' // Teams reaches the bot over the internet; the endpoint checks every token
  }
}

resource teams 'Microsoft.BotService/botServices/channels@2022-09-15' = {
  parent: bot
  name: 'MsTeamsChannel'
  location: 'global'
  properties: {
    channelName: 'MsTeamsChannel'
    properties: { isEnabled: true, acceptedTerms: true }
  }
}

output name string = bot.name
output appId string = identityClientId
