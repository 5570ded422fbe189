// Defender for Cloud continuous export of the subscription's alerts to the alerts hub, as a trusted
// service: Defender's own service principal ("Windows Azure Security Resource Provider", its object
// id in this tenant: `infra/find-defender-principal.sh`, run by azd before provisioning) sends with
// Azure Event Hubs Data Sender on the alerts hub alone. No SAS key is involved.
param name string
param location string
param tags object = {}
param eventHubNamespaceName string
param alertsHubName string
@description('Object id of the "Windows Azure Security Resource Provider" service principal in this tenant.')
param defenderPrincipalId string

var eventHubsDataSender = '2b629674-e913-4c01-ae53-ef4638d8f975' // Azure Event Hubs Data Sender

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' existing = { name: eventHubNamespaceName }
resource hub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' existing = { parent: namespace, name: alertsHubName }

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hub.id, defenderPrincipalId, eventHubsDataSender)
  scope: hub
  properties: { principalId: defenderPrincipalId, principalType: 'ServicePrincipal', roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataSender) }
}

resource automation 'Microsoft.Security/automations@2023-12-01-preview' = {
  name: name
  location: location
  tags: tags
  properties: {
    description: 'Aegis: Defender for Cloud alerts to the ingest hub (trusted service)'
    isEnabled: true
    scopes: [{ description: 'the subscription', scopePath: subscription().id }]
    sources: [{ eventSource: 'Alerts' }]
    actions: [{ actionType: 'EventHub', eventHubResourceId: hub.id, isTrustedServiceEnabled: true }]
  }
  dependsOn: [sender]
}

output id string = automation.id
