// Role assignments at the subscription: the response acts on alerts and AI accounts anywhere in it.
targetScope = 'subscription'

param principalId string
@description('Grant Cognitive Services Contributor (contain, restore, rotate keys) on the whole subscription; otherwise grant it per account outside this template.')
param grantAiContributor bool = true

var roles = {
  securityAdmin: 'fb1c8493-542b-48eb-b624-b4c8fea62acd' // update_defender_alert changes alert state
  securityReader: '39bc4728-0917-49c7-9d2c-d95423bc2eb4' // the defender enricher reads alerts
  cognitiveServicesContributor: '25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68' // contain / restore / rotate_ai_keys
  // the inventory: Resource Graph lists what the identity can read; deployments, RAI policies and diagnostic
  // settings are reads (no action: listKeys is not granted by it)
  reader: 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
}

resource security 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in [roles.securityAdmin, roles.securityReader, roles.reader]: {
  name: guid(subscription().id, principalId, role)
  properties: { principalId: principalId, principalType: 'ServicePrincipal', roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role) }
}]

resource ai 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantAiContributor) {
  name: guid(subscription().id, principalId, roles.cognitiveServicesContributor)
  properties: { principalId: principalId, principalType: 'ServicePrincipal', roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.cognitiveServicesContributor) }
}
